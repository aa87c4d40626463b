package resumable

import (
	"context"
	"io"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
)

// Storage is where a Server's uploads live: tusd's data store, and
// beside each upload the record this package keeps of it
// (deliveryrecord.go). The Server holds one, opened once when the store
// is first used: the folder of dir (fileStorage), or a bucket (package
// s3store, through Options.OpenS3). No request path asks which it is.
//
// Every instance that uses the same store sees the same uploads and
// records: with a Coordinator over Redis, several instances may share
// it (docs/resumable.md, "Behind a load balancer").
type Storage interface {
	// Key names the store: Servers with the same key share it, and its
	// max_disk budget. The folder's absolute path, or the bucket's URL.
	Key() string
	// UseIn sets tusd's data store of the uploads (with its termination
	// and deferred-length extensions) in composer.
	UseIn(composer *handler.StoreComposer)

	// ReadRecord returns the record of upload id, as WriteRecord stored
	// it; an error matching fs.ErrNotExist when there is none.
	ReadRecord(ctx context.Context, id string) ([]byte, error)
	// WriteRecord stores the record of upload id, replacing the old one
	// whole: a reader sees the old or the new, never a mix.
	WriteRecord(ctx context.Context, id string, data []byte) error
	// RecordIDs lists the uploads that have a record.
	RecordIDs(ctx context.Context) ([]string, error)

	// Open reads the bytes of a complete upload, from the first.
	Open(ctx context.Context, id string) (io.ReadCloser, error)
	// LastWrite is when the upload's bytes were last written to; zero
	// if none was, or the store cannot tell.
	LastWrite(ctx context.Context, id string) (time.Time, error)
	// RemoveData removes the upload's bytes and tusd's info of it,
	// keeping its record. Nothing to remove is fine.
	RemoveData(ctx context.Context, id string) error
	// Remove removes everything of the upload, its record included.
	// Nothing to remove is fine.
	Remove(ctx context.Context, id string) error

	// Close lets go of what the store holds (clients, connections).
	Close() error
}
