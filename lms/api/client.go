package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Error is a non-2xx answer of the control API.
type Error struct {
	Status  int    // HTTP status code
	Message string // the server's "error" field, or the status text
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Client calls the control API. The zero HTTPClient means a client with a
// 30 s timeout.
type Client struct {
	BaseURL    string // e.g. http://127.0.0.1:9090
	Token      string // bearer token
	HTTPClient *http.Client
}

// NewClient returns a Client for baseURL authenticating with token.
func NewClient(baseURL, token string) *Client {
	return &Client{
		BaseURL:    strings.TrimRight(baseURL, "/"),
		Token:      token,
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	}
}

// maxResponse bounds how much of an answer the client reads.
const maxResponse = 16 << 20

func streamPath(app, name string) string {
	return "/api/v1/streams/" + url.PathEscape(app) + "/" + url.PathEscape(name)
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is non-nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = http.StatusText(resp.StatusCode)
		}
		return &Error{Status: resp.StatusCode, Message: eb.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// ListStreams returns every registered stream with its live status.
func (c *Client) ListStreams(ctx context.Context) ([]StreamInfo, error) {
	var l StreamList
	if err := c.do(ctx, http.MethodGet, "/api/v1/streams", nil, &l); err != nil {
		return nil, err
	}
	return l.Streams, nil
}

// GetStream returns one stream with its live status.
func (c *Client) GetStream(ctx context.Context, app, name string) (StreamInfo, error) {
	var s StreamInfo
	err := c.do(ctx, http.MethodGet, streamPath(app, name), nil, &s)
	return s, err
}

// CreateStream registers a stream and returns it as stored (with the
// generated publish token when none was given).
func (c *Client) CreateStream(ctx context.Context, req CreateStreamRequest) (Stream, error) {
	var s Stream
	err := c.do(ctx, http.MethodPost, "/api/v1/streams", req, &s)
	return s, err
}

// PatchStream changes the fields present in p and returns the stream as stored.
func (c *Client) PatchStream(ctx context.Context, app, name string, p StreamPatch) (Stream, error) {
	var s Stream
	err := c.do(ctx, http.MethodPatch, streamPath(app, name), p, &s)
	return s, err
}

// DeleteStream removes a stream from the registry.
func (c *Client) DeleteStream(ctx context.Context, app, name string) error {
	return c.do(ctx, http.MethodDelete, streamPath(app, name), nil, nil)
}

// SwitchStream sets the stream's feed policy ("main", "backup" or "auto")
// on every unit.
func (c *Client) SwitchStream(ctx context.Context, app, name, feed string) (StreamInfo, error) {
	var out StreamInfo
	err := c.do(ctx, http.MethodPost, streamPath(app, name)+"/switch", SwitchRequest{Feed: feed}, &out)
	return out, err
}

// KickStream disconnects the stream's publishers; the encoder may reconnect.
func (c *Client) KickStream(ctx context.Context, app, name string) error {
	return c.do(ctx, http.MethodPost, streamPath(app, name)+"/kick", nil, nil)
}

// Call sends method path (e.g. "/api/v1/cdn/plan", with its query) with
// body encoded as JSON when not nil, and decodes the JSON answer into out
// when not nil (a *json.RawMessage keeps it as sent). It is the way to
// the routes this client has no method for.
func (c *Client) Call(ctx context.Context, method, path string, body, out any) error {
	return c.do(ctx, method, path, body, out)
}
