package archive

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// copyBlock builds a binary COPY stream of rows with one text field each.
func copyBlock(values ...string) []byte {
	b := copyHeader()
	for _, v := range values {
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return append(b, copyTrailer...)
}

func testManifest() Manifest {
	return Manifest{
		Producer: "test", TenantID: "acme", Tier: "schema", Placement: "local", MigrationVersion: 4,
		EmbeddingDimension: 8, CreatedAt: time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
		Tables: []TableInfo{
			{Name: "documents", Rows: 3, Columns: []Column{{Name: "content", Type: "text"}}},
			{Name: "chunks", Rows: 0, Columns: []Column{{Name: "content", Type: "text"}}},
		},
		KeyHashes: true,
	}
}

func writeTestArchive(t *testing.T, opts WriterOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testManifest(), opts)
	require.NoError(t, err)
	require.NoError(t, w.BeginTable("documents"))
	require.NoError(t, w.WriteBlock(copyBlock("one", "two"), 2))
	require.NoError(t, w.WriteBlock(copyBlock("three"), 1))
	require.NoError(t, w.EndTable())
	require.NoError(t, w.BeginTable("chunks"))
	require.NoError(t, w.EndTable())
	require.NoError(t, w.WriteKeys([]Key{{KeyID: "abcdefghijklmnop", SecretHash: bytes.Repeat([]byte{7}, 32)}}))
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// readAll reads an archive to its end and returns the rows of every table.
func readAll(src []byte, opts ReaderOptions) (map[string][][]byte, []Key, error) {
	r, err := NewReader(bytes.NewReader(src), opts)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	out := map[string][][]byte{}
	for {
		info, err := r.NextTable()
		if errors.Is(err, io.EOF) {
			return out, r.Keys(), nil
		}
		if err != nil {
			return nil, nil, err
		}
		for {
			block, rows, err := r.NextBlock()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, err
			}
			n, err := countCopyTuples(block, 1)
			if err != nil {
				return nil, nil, err
			}
			if n != rows {
				return nil, nil, errors.New("row count")
			}
			out[info.Name] = append(out[info.Name], append([]byte(nil), block...))
		}
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	t.Parallel()
	for _, opts := range []struct {
		w WriterOptions
		r ReaderOptions
	}{{}, {WriterOptions{Uncompressed: true}, ReaderOptions{Uncompressed: true}}} {
		data := writeTestArchive(t, opts.w)
		require.True(t, bytes.HasPrefix(data, []byte(Magic)))
		r, err := NewReader(bytes.NewReader(data), opts.r)
		require.NoError(t, err)
		m := r.Manifest()
		r.Close()
		require.Equal(t, FormatName, m.Format)
		require.Equal(t, FormatVersion, m.FormatVersion)
		require.Equal(t, "acme", m.TenantID)
		tables, keys, err := readAll(data, opts.r)
		require.NoError(t, err)
		require.Len(t, tables["documents"], 2)
		require.Empty(t, tables["chunks"])
		require.Len(t, keys, 1)
		require.Equal(t, "abcdefghijklmnop", keys[0].KeyID)
	}
}

// Every proper prefix of an archive is refused: nothing short of the end frame is accepted.
func TestArchiveTruncatedAnywhereIsRefused(t *testing.T) {
	t.Parallel()
	for _, compressed := range []bool{true, false} {
		data := writeTestArchive(t, WriterOptions{Uncompressed: !compressed})
		for n := 0; n < len(data); n++ {
			_, _, err := readAll(data[:n], ReaderOptions{Uncompressed: !compressed})
			require.Error(t, err, "prefix of %d of %d bytes", n, len(data))
			require.True(t, errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotArchive),
				"prefix of %d bytes: %v", n, err)
		}
	}
}

// Every single-byte change after the magic is detected (zstd's checksum, our frame CRCs or the
// SHA-256 sums).
func TestArchiveCorruptedAnywhereIsRefused(t *testing.T) {
	t.Parallel()
	for _, compressed := range []bool{true, false} {
		data := writeTestArchive(t, WriterOptions{Uncompressed: !compressed})
		for i := len(Magic); i < len(data); i++ {
			bad := append([]byte(nil), data...)
			bad[i] ^= 0x5a
			_, _, err := readAll(bad, ReaderOptions{Uncompressed: !compressed})
			require.Error(t, err, "byte %d flipped", i)
		}
	}
}

// A frame whose CRC and the table's SHA-256 were both recomputed still fails the archive's
// SHA-256: the end frame covers everything before it.
func TestArchiveForgedBlockFailsTheTableChecksum(t *testing.T) {
	t.Parallel()
	data := writeTestArchive(t, WriterOptions{Uncompressed: true})
	i := bytes.Index(data, []byte("three"))
	require.Positive(t, i)
	forged := append([]byte(nil), data...)
	copy(forged[i:], "THREE")
	// Find the block frame that holds it and fix its CRC.
	for p := len(Magic); p < len(forged); {
		n := int(binary.BigEndian.Uint32(forged[p+1:]))
		if p+frameHeaderBytes <= i && i < p+frameHeaderBytes+n {
			binary.BigEndian.PutUint32(forged[p+5:], crc32.Checksum(forged[p+frameHeaderBytes:p+frameHeaderBytes+n], crcTable))
			break
		}
		p += frameHeaderBytes + n
	}
	_, _, err := readAll(forged, ReaderOptions{Uncompressed: true})
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "SHA-256")
}

func TestArchiveForeignInputIsNotAnArchive(t *testing.T) {
	t.Parallel()
	var zbuf bytes.Buffer
	zw, err := zstd.NewWriter(&zbuf)
	require.NoError(t, err)
	_, _ = zw.Write([]byte("hello"))
	require.NoError(t, zw.Close())
	for name, data := range map[string][]byte{
		"empty":          {},
		"text":           []byte("id,name\n1,acme\n"),
		"pg_dump":        []byte("PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01"),
		"zstd":           zbuf.Bytes(),
		"magic, no zstd": []byte(Magic + "plain text after the magic"),
	} {
		_, err := NewReader(bytes.NewReader(data), ReaderOptions{})
		require.ErrorIs(t, err, ErrNotArchive, name)
	}
}

// rawArchive writes an archive whose manifest is given as raw JSON, as a newer or foreign
// producer could.
func rawArchive(t *testing.T, manifest map[string]any) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(Magic)
	zw, err := zstd.NewWriter(&buf)
	require.NoError(t, err)
	body, err := json.Marshal(manifest)
	require.NoError(t, err)
	var hdr [frameHeaderBytes]byte
	hdr[0] = frameManifest
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	binary.BigEndian.PutUint32(hdr[5:], crc32.Checksum(body, crcTable))
	_, _ = zw.Write(hdr[:])
	_, _ = zw.Write(body)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestArchiveFutureFormatIsRefused(t *testing.T) {
	t.Parallel()
	_, err := NewReader(bytes.NewReader(rawArchive(t, map[string]any{"format": FormatName, "format_version": FormatVersion + 1})), ReaderOptions{})
	require.ErrorIs(t, err, ErrFutureVersion)
	require.ErrorContains(t, err, "format version 2")

	_, err = NewReader(bytes.NewReader(rawArchive(t, map[string]any{"format": "something-else", "format_version": 1})), ReaderOptions{})
	require.ErrorIs(t, err, ErrNotArchive)
}

func TestWriterChecksItsInput(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testManifest(), WriterOptions{})
	require.NoError(t, err)
	require.Error(t, w.BeginTable("chunks"), "tables go in manifest order")
	require.NoError(t, w.BeginTable("documents"))
	require.NoError(t, w.WriteBlock(copyBlock("one"), 1))
	require.ErrorContains(t, w.EndTable(), "manifest says 3")
	w.Abort()
}

func TestCopySplitterCutsBlocksAndKeepsEveryTuple(t *testing.T) {
	t.Parallel()
	var values []string
	for i := range 1000 {
		values = append(values, string(bytes.Repeat([]byte{byte('a' + i%26)}, i%50)))
	}
	src := copyBlock(values...)
	for _, chunk := range []int{1, 7, 4096, len(src)} {
		var got []string
		s := newCopySplitter(64, 1<<20, func(block []byte, rows int) error {
			n, err := countCopyTuples(block, 1)
			require.NoError(t, err)
			require.Equal(t, rows, n)
			require.LessOrEqual(t, rows, 64)
			p := len(copySignature) + 8
			for range rows {
				p += 2
				l := int(binary.BigEndian.Uint32(block[p:]))
				p += 4
				got = append(got, string(block[p:p+l]))
				p += l
			}
			return nil
		})
		for p := 0; p < len(src); p += chunk {
			_, err := s.Write(src[p:min(p+chunk, len(src))])
			require.NoError(t, err)
		}
		n, err := s.finish()
		require.NoError(t, err)
		require.EqualValues(t, len(values), n)
		require.Equal(t, values, got, "written %d bytes at a time", chunk)
	}
	s := newCopySplitter(64, 1<<20, func([]byte, int) error { return nil })
	_, _ = s.Write(src[:len(src)-2])
	_, err := s.finish()
	require.ErrorIs(t, err, errCopyFormat)
}
