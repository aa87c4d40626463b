package resumable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
)

// fileStorage is the Storage of dir: a folder (0700, its files 0600)
// with tusd's file store, <id> (the bytes) and <id>.info, and the
// record of each upload in <id>.delivery. The local Coordinator keeps
// tusd's lock files (<id>.lock, <id>.stop) there too.
type fileStorage struct {
	dir   string // absolute
	store filestore.FileStore
}

// recordSuffix names an upload's record beside tusd's <id> and <id>.info.
const recordSuffix = ".delivery"

// newFileStorage opens the folder dir, creating it if need be.
func newFileStorage(dir string) (*fileStorage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the upload folder: %w", err)
	}
	store := filestore.New(dir)
	store.DirModePerm = 0o700
	store.FileModePerm = 0o600
	return &fileStorage{dir: dir, store: store}, nil
}

func (fs *fileStorage) Key() string { return fs.dir }

func (fs *fileStorage) UseIn(composer *handler.StoreComposer) { fs.store.UseIn(composer) }

// recordPath is where the record of upload id lives.
func (fs *fileStorage) recordPath(id string) string { return filepath.Join(fs.dir, id+recordSuffix) }

func (fs *fileStorage) ReadRecord(_ context.Context, id string) ([]byte, error) {
	return os.ReadFile(fs.recordPath(id))
}

// WriteRecord writes to a temporary file, then renames it over the
// record. The file is private (0600): it holds the creation's
// Authorization and Cookie headers.
func (fs *fileStorage) WriteRecord(_ context.Context, id string, data []byte) error {
	tmp, err := os.CreateTemp(fs.dir, id+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), fs.recordPath(id))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

func (fs *fileStorage) RecordIDs(context.Context) ([]string, error) {
	entries, err := os.ReadDir(fs.dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", fs.dir, err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), recordSuffix); ok && validateID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (fs *fileStorage) Open(_ context.Context, id string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(fs.dir, id))
}

// LastWrite is the data file's modification time.
func (fs *fileStorage) LastWrite(_ context.Context, id string) (time.Time, error) {
	fi, err := os.Stat(filepath.Join(fs.dir, id))
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

func (fs *fileStorage) RemoveData(_ context.Context, id string) error {
	return fs.remove(id, ".info")
}

func (fs *fileStorage) Remove(_ context.Context, id string) error {
	return fs.remove(id, ".info", ".lock", ".stop", recordSuffix)
}

// remove deletes the file <id> and those named <id><suffix>; missing
// files are fine.
func (fs *fileStorage) remove(id string, suffixes ...string) error {
	var errs []error
	for _, suffix := range append([]string{""}, suffixes...) {
		if err := os.Remove(filepath.Join(fs.dir, id+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (fs *fileStorage) Close() error { return nil }

// Interface guard
var _ Storage = (*fileStorage)(nil)
