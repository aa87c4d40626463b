package s3store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tus/tusd/v2/pkg/handler"
)

// dataStore is tusd's S3 store as tusd's handler sees it here: an
// upload is named by its resumable ID alone (set before creation, by
// the PreUploadCreateCallback), and the multipart upload ID that tusd's
// S3 store appends to it stays inside.
type dataStore struct{ s *Storage }

// maxMetadata is what S3 takes of an object's user metadata: the keys
// and values together, in bytes.
const maxMetadata = 2048

func (d dataStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	size := 0
	for key, value := range info.MetaData {
		size += len(key) + len(value)
	}
	if size > maxMetadata {
		// tusd's S3 store sends it with the multipart upload, which S3
		// refuses past 2 KiB: a client's error, not the store's
		return nil, metadataTooLarge(size)
	}
	id := info.ID
	up, err := d.s.tus.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	full, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	if objectID, mpid, ok := cutID(full.ID); ok && objectID == id {
		d.s.remember(id, mpid)
	}
	return upload{Upload: up, id: id, tus: d.s.tus}, nil
}

func (d dataStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	if !validID(id) {
		return nil, handler.ErrNotFound
	}
	mpid, err := d.s.multipartID(ctx, id)
	if err != nil {
		return nil, err
	}
	up, err := d.s.tus.GetUpload(ctx, id+"+"+mpid)
	if err != nil {
		return nil, err
	}
	return upload{Upload: up, id: id, tus: d.s.tus}, nil
}

func (d dataStore) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	u := up.(upload)
	return terminatable{u, d.s}
}

func (d dataStore) AsLengthDeclarableUpload(up handler.Upload) handler.LengthDeclarableUpload {
	u := up.(upload)
	return u.tus.AsLengthDeclarableUpload(u.Upload)
}

// upload is one of tusd's S3 uploads, whose info carries the ID the
// client sees.
type upload struct {
	handler.Upload
	id  string
	tus interface {
		AsTerminatableUpload(handler.Upload) handler.TerminatableUpload
		AsLengthDeclarableUpload(handler.Upload) handler.LengthDeclarableUpload
	}
}

func (u upload) GetInfo(ctx context.Context) (handler.FileInfo, error) {
	info, err := u.Upload.GetInfo(ctx)
	info.ID = u.id
	return info, err
}

// terminatable terminates an upload through tusd's S3 store, then
// forgets its multipart upload ID.
type terminatable struct {
	u upload
	s *Storage
}

func (t terminatable) Terminate(ctx context.Context) error {
	err := t.u.tus.AsTerminatableUpload(t.u.Upload).Terminate(ctx)
	t.s.forget(t.u.id)
	return err
}

// metadataTooLarge is the answer to a creation whose metadata S3 would
// refuse: 400 with a JSON error, as the resumable package answers.
func metadataTooLarge(size int) handler.Error {
	msg := fmt.Sprintf("the upload's metadata takes %d bytes (keys and values); the S3 store takes at most %d", size, maxMetadata)
	body, _ := json.Marshal(map[string]string{"error": msg})
	return handler.Error{
		ErrorCode: "ERR_INVALID_METADATA",
		Message:   msg,
		HTTPResponse: handler.HTTPResponse{
			StatusCode: http.StatusBadRequest,
			Body:       string(body) + "\n",
			Header:     handler.HTTPHeader{"Content-Type": "application/json", "Cache-Control": "no-store"},
		},
	}
}

// cutID splits tusd's S3 upload ID, <id>+<multipart upload ID>.
func cutID(full string) (id, mpid string, ok bool) {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '+' {
			return full[:i], full[i+1:], i+1 < len(full)
		}
	}
	return "", "", false
}

// Interface guards
var (
	_ handler.DataStore               = dataStore{}
	_ handler.TerminaterDataStore     = dataStore{}
	_ handler.LengthDeferrerDataStore = dataStore{}
)
