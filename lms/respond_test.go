package lms

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/livefuse/livefuse/lms/api"
)

func TestWriteJSON(t *testing.T) {
	tests := []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		body   string
	}{
		{"value", func(w http.ResponseWriter) { WriteJSON(w, http.StatusCreated, map[string]int{"n": 1}) }, http.StatusCreated, `{"n":1}` + "\n"},
		{"error", func(w http.ResponseWriter) { WriteError(w, http.StatusNotFound, "no such stream") }, http.StatusNotFound, `{"error":"no such stream"}` + "\n"},
		{"unencodable", func(w http.ResponseWriter) { WriteJSON(w, http.StatusOK, math.NaN()) }, http.StatusInternalServerError, `{"error":"internal error"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.write(rec)
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.status, tt.body)
			}
			h := rec.Header()
			if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("headers %v", h)
			}
			if tt.status >= 400 {
				var e api.ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
					t.Errorf("error body %q does not decode as api.ErrorBody: %v", rec.Body.String(), err)
				}
			}
		})
	}
}
