package rerank_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tenantmem/tenantmem/internal/rerank"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClient runs the client against a fake /rerank server: the common request shape, answers
// in any order, and every way an answer can be unusable.
func TestClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		want    []float64
		wantErr error
	}{
		{"scores in any order", func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Model     string   `json:"model"`
				Query     string   `json:"query"`
				Documents []string `json:"documents"`
				TopN      int      `json:"top_n"`
			}
			if r.URL.Path != "/v1/rerank" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Query != "q" ||
				len(req.Documents) != 2 || req.TopN != 2 || req.Model != "m" || r.Header.Get("Authorization") != "Bearer k" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_, _ = w.Write([]byte(`{"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}`))
		}, []float64{0.1, 0.9}, nil},
		{"score instead of relevance_score", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"results": [{"index": 0, "score": 2}, {"index": 1, "score": 3}]}`))
		}, []float64{2, 3}, nil},
		{"server error", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }, nil, rerank.ErrUnavailable},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}, nil, rerank.ErrUnavailable},
		{"not JSON", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`<html>`)) }, nil, rerank.ErrBadResponse},
		{"missing document", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"results": [{"index": 0, "relevance_score": 1}]}`))
		}, nil, rerank.ErrBadResponse},
		{"repeated index", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"results": [{"index": 0, "relevance_score": 1}, {"index": 0, "relevance_score": 1}]}`))
		}, nil, rerank.ErrBadResponse},
		{"index out of range", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"results": [{"index": 0, "relevance_score": 1}, {"index": 7, "relevance_score": 1}]}`))
		}, nil, rerank.ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(tc.handler))
			defer srv.Close()
			timeout := 10 * time.Second // a loopback round trip may take a while on a loaded machine
			if tc.name == "timeout" {
				timeout = 200 * time.Millisecond
			}
			c, err := rerank.New(rerank.Config{BaseURL: srv.URL + "/v1", Model: "m", APIKey: "k", Timeout: timeout})
			require.NoError(t, err)
			got, err := c.Rerank(context.Background(), "q", []string{"a", "b"})
			if tc.wantErr != nil {
				require.True(t, errors.Is(err, tc.wantErr), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := rerank.New(rerank.Config{BaseURL: "ftp://x"})
	require.Error(t, err)
}
