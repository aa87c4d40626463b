package resumable

import (
	"context"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"go.uber.org/zap"
	"golang.org/x/exp/slog"
)

// newSlogLogger gives tusd (which logs through golang.org/x/exp/slog) a
// logger that passes its warnings and errors to zap, at most one a
// second (a store that does not answer fails every request); its
// per-request information lines are dropped.
func newSlogLogger(logger *zap.Logger) *slog.Logger {
	return slog.New(zapHandler{logger: logger.Named("tusd"), gate: new(ratelog.Gate)})
}

// zapHandler is an slog.Handler writing to zap.
type zapHandler struct {
	logger *zap.Logger
	gate   *ratelog.Gate // shared by the handlers WithAttrs and WithGroup make
}

func (h zapHandler) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelWarn }

func (h zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.String(a.Key, a.Value.String()))
		return true
	})
	switch {
	case r.Message == "BodyReadError":
		// a client that pauses or loses its connection: nothing wrong here
		h.logger.Debug(r.Message, fields...)
	case !h.gate.Allow():
	case r.Level >= slog.LevelError:
		h.logger.Error(r.Message, fields...)
	default:
		h.logger.Warn(r.Message, fields...)
	}
	return nil
}

func (h zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, 0, len(attrs))
	for _, a := range attrs {
		fields = append(fields, zap.String(a.Key, a.Value.String()))
	}
	return zapHandler{logger: h.logger.With(fields...), gate: h.gate}
}

func (h zapHandler) WithGroup(name string) slog.Handler {
	return zapHandler{logger: h.logger.Named(name), gate: h.gate}
}

var _ slog.Handler = zapHandler{}
