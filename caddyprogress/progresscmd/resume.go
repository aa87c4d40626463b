package progresscmd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// resumeStore keeps the URL of each resumable upload that has not
// finished, so that send, run again with the same file and endpoint,
// goes on where it stopped. Each upload is one small JSON file (only the
// user can read it: it holds the upload's and group's tokens), named by a
// fingerprint of the file (absolute path, size, modification time) and
// the endpoint: a file that changed starts a new upload.
type resumeStore struct {
	dir string
}

// newResumeStore keeps its files in the user's cache folder
// ($XDG_CACHE_HOME/caddy-upload-progress/resumable on Linux).
func newResumeStore() (resumeStore, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return resumeStore{}, fmt.Errorf("finding a folder to keep resumable uploads' URLs in: %v", err)
	}
	return resumeStore{dir: filepath.Join(cache, "caddy-upload-progress", "resumable")}, nil
}

// fingerprint names the upload of file at endpoint.
func fingerprint(file string, info os.FileInfo, endpoint string) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	h := sha256.New()
	for _, s := range []string{abs, strconv.FormatInt(info.Size(), 10), strconv.FormatInt(info.ModTime().UnixNano(), 10), endpoint} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s resumeStore) path(key string) string { return filepath.Join(s.dir, key+".json") }

// load returns the upload stored under key, ok false when there is none.
func (s resumeStore) load(key string) (u tusUpload, ok bool) {
	data, err := os.ReadFile(s.path(key))
	if err != nil || json.Unmarshal(data, &u) != nil || u.URL == "" {
		return tusUpload{}, false
	}
	return u, true
}

// save stores u under key, whole (a temporary file, then a rename).
func (s resumeStore) save(key string, u tusUpload) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("keeping the upload's URL: %v", err)
	}
	data, _ := json.Marshal(u)
	tmp, err := os.CreateTemp(s.dir, key+".*.tmp")
	if err != nil {
		return fmt.Errorf("keeping the upload's URL: %v", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path(key))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("keeping the upload's URL: %v", err)
	}
	return nil
}

// forget removes the upload stored under key.
func (s resumeStore) forget(key string) { os.Remove(s.path(key)) }
