package redistracker

import (
	"context"
	"fmt"
	"sync"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/ratelog"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// go-redis logs its own connection failures with the standard library's
// logger, to stderr, several times a second while Redis is away. Its
// logger is process-wide: the first tracker sends it to its zap logger
// at debug level, at most once a second. The package's own lines (one
// per health change) say what matters.
var setGoRedisLogger sync.Once

type goRedisLogger struct {
	log  *zap.Logger
	gate ratelog.Gate // at most one line a second
}

func (l *goRedisLogger) Printf(_ context.Context, format string, v ...any) {
	if !l.gate.Allow() {
		return
	}
	l.log.Debug("go-redis", zap.String("message", fmt.Sprintf(format, v...)))
}

func quietGoRedis(log *zap.Logger) {
	setGoRedisLogger.Do(func() {
		redis.SetLogger(&goRedisLogger{log: log.Named("go-redis")})
	})
}
