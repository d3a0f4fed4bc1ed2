package lms

import (
	"encoding/json"
	"net/http"

	"github.com/livefuse/livefuse/lms/api"
)

// WriteJSON answers a control API request with v as JSON: one line, not
// cached, not sniffed. A value that cannot be encoded answers 500 with an
// error body instead. Every handler of the control API, in lms and in the
// handlers other packages mount under /api/v1, answers through it.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError answers a control API request with status and the error body
// {"error": msg} (api.ErrorBody). msg is shown to the caller: it must not
// hold secrets.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, api.ErrorBody{Error: msg})
}
