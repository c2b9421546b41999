package memory_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
)

// TestMetadataScannedAsBytesIsWhatEncodingJSONGave: a jsonb column scanned into (*[]byte)(&raw), as
// scanSearchRows does since b7ec60f, gives the bytes that scanning into &raw (json.RawMessage,
// through encoding/json) gave, in the binary and text result formats, for SQL NULL too, and the
// same JSON answer.
func TestMetadataScannedAsBytesIsWhatEncodingJSONGave(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	defer conn.Close(ctx)
	m := conn.TypeMap()
	values := []string{`'{}'::jsonb`, `'{"start": 0, "end": 12, "section": "a<b & c>d", "x": [1, 2.50, 1e3, -0.0, null, true]}'::jsonb`,
		`'{"é": "\u00e9\u2028😀", "k": "\"\\\/"}'::jsonb`, `'null'::jsonb`, `'[]'::jsonb`, `'"s"'::jsonb`, `'123456789012345678901234567890.5'::jsonb`,
		`NULL::jsonb`, `(SELECT jsonb_object_agg(g::text, repeat('v', g)) FROM generate_series(1, 300) g)`}
	for _, v := range values {
		for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
			rr := conn.PgConn().ExecParams(ctx, `SELECT `+v, nil, nil, nil, []int16{format})
			require.True(t, rr.NextRow(), v)
			fd := rr.FieldDescriptions()[0]
			src := rr.Values()[0]
			var before, after json.RawMessage
			require.NoError(t, m.PlanScan(fd.DataTypeOID, fd.Format, &before).Scan(src, &before), v)
			require.NoError(t, m.PlanScan(fd.DataTypeOID, fd.Format, (*[]byte)(&after)).Scan(src, (*[]byte)(&after)), v)
			require.Equal(t, before == nil, after == nil, "%s format %d: nil-ness", v, format)
			require.Equal(t, []byte(before), []byte(after), "%s format %d", v, format)
			if src != nil && format == pgtype.BinaryFormatCode {
				require.Equal(t, byte(1), src[0], "jsonb binary version byte")
				require.Equal(t, src[1:], []byte(after), "the version byte is dropped, nothing else")
			}
			jb, err := json.Marshal(memory.SearchResult{Metadata: before})
			require.NoError(t, err)
			ja, err := json.Marshal(memory.SearchResult{Metadata: after})
			require.NoError(t, err)
			require.Equal(t, string(jb), string(ja), "%s format %d: answer", v, format)
			rr.NextRow()
			_, err = rr.Close()
			require.NoError(t, err)
		}
	}
	// Aliasing: the scanned bytes are a copy, not pgconn's read buffer.
	rr := conn.PgConn().ExecParams(ctx, `SELECT '{"a": 1}'::jsonb`, nil, nil, nil, []int16{pgtype.BinaryFormatCode})
	require.True(t, rr.NextRow())
	src := rr.Values()[0]
	var after json.RawMessage
	require.NoError(t, m.PlanScan(pgtype.JSONBOID, pgtype.BinaryFormatCode, (*[]byte)(&after)).Scan(src, (*[]byte)(&after)))
	for i := range src {
		src[i] = 'X'
	}
	require.Equal(t, `{"a": 1}`, string(after))
	_, err = rr.Close()
	require.NoError(t, err)
}
