package httpapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestDecodeLocatedNamesTheValue(t *testing.T) {
	t.Parallel()
	type chunkIn struct {
		Content   string    `json:"content"`
		Embedding []float32 `json:"embedding"`
	}
	type doc struct {
		Name   string    `json:"document_name"`
		Chunks []chunkIn `json:"chunks"`
	}
	for _, tc := range []struct {
		given      string
		field, msg string
	}{
		{`{"document_name": "a", "chunks": [{"content": "x", "embedding": [0.1, 0.2]}, {"content": "y", "embedding": [0.5, NaN, 1]}]}`,
			"chunks[1].embedding[1]", "NaN is not a JSON number"},
		{`{"chunks": [{"embedding": [Infinity]}]}`, "chunks[0].embedding[0]", "Infinity"},
		{`{"chunks": [{"embedding": [1, -Infinity]}]}`, "chunks[0].embedding[1]", "-Infinity"},
		{`{"chunks": [{"content": "x"}, {"content": "y", "embedding": [1, 2, 3e39]}]}`, "chunks[1].embedding[2]", "out of range"},
		{`{"chunks": [{"content": "x", "embedding": [1, "two"]}]}`, "chunks[0].embedding[1]", "must be a number"},
		{`{"chunks": [{"content": 5}]}`, "chunks[0].content", "must be a string"},
		{`{"chunks": [{"content": "x", "tenant_id": "other"}]}`, "tenant_id", "unknown field"},
		{`{"document_name": "a", "chunks": [{"content": "x"}]`, "body", "truncated"},
		{``, "body", "empty"},
		{`{"document_name": "a"} {"again": 1}`, "body", "unexpected data"},
	} {
		var d doc
		err := decodeLocated([]byte(tc.given), &d)
		var fe *registry.FieldError
		require.True(t, errors.As(err, &fe), "%s: %v", tc.given, err)
		require.Equal(t, tc.field, fe.Field, tc.given)
		require.Contains(t, fe.Message, tc.msg, tc.given)
	}
	var d doc
	require.NoError(t, decodeLocated([]byte(`{"document_name": "ok", "chunks": [{"content": "x", "embedding": [1e-3, -2]}]}`), &d))
	require.Equal(t, []float32{1e-3, -2}, d.Chunks[0].Embedding)
	require.Equal(t, "", jsonPathAt([]byte(strings.Repeat(" ", 4)+"{}"), 2))
}
