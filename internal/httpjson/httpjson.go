// Package httpjson writes the JSON answers of the handler's own routes,
// for the core and its subpackages alike.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers with code and v as JSON (one line), never cached.
func Write(w http.ResponseWriter, code int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, err = w.Write(append(body, '\n'))
	return err
}
