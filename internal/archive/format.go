package archive

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Magic is the first line of every archive, before the compressed stream.
const Magic = "TENANTMEM-ARCHIVE\n"

// FormatName is the manifest's "format".
const FormatName = "tenantmem-archive"

// FormatVersion is the version of the format this package writes. Readers accept every version
// up to it; a newer one gives ErrFutureVersion.
const FormatVersion = 1

// MaxFrameBytes bounds one frame, so a corrupted length cannot make a reader allocate without
// bound. Writers stay far below it (blocks are cut at BlockBytes).
const MaxFrameBytes = 64 << 20

// Errors of a reader. Each is wrapped with what was found.
var (
	// ErrNotArchive means the input is not a tenant archive (wrong magic, or not zstd).
	ErrNotArchive = errors.New("not a tenantmem archive")
	// ErrFutureVersion means the archive was written by a newer format than this reader knows.
	ErrFutureVersion = errors.New("archive format is newer than this tenantmem")
	// ErrTruncated means the archive ends before its end frame.
	ErrTruncated = errors.New("archive is truncated")
	// ErrCorrupt means a checksum, a count or the framing does not match.
	ErrCorrupt = errors.New("archive is corrupted")
)

// Frame kinds.
const (
	frameManifest   byte = 'M'
	frameTableStart byte = 'T'
	frameBlock      byte = 'B'
	frameTableEnd   byte = 'E'
	frameKeys       byte = 'K'
	frameEnd        byte = 'Z'
)

// Column is one archived column: its name and its type as PostgreSQL's format_type writes it.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// TableInfo describes one archived table.
type TableInfo struct {
	Name string `json:"name"`
	// Rows is the number of rows, counted in the snapshot the archive was read from.
	Rows int64 `json:"rows"`
	// Columns are the archived columns, in the order of every block's tuples. Generated columns
	// are left out (they are computed again on load).
	Columns []Column `json:"columns"`
}

// Manifest is the first frame of an archive: what it holds and where it comes from.
type Manifest struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	// Producer names the program that wrote the archive.
	Producer string `json:"producer"`
	// TenantID is the tenant the rows belong to (their owner_id).
	TenantID string `json:"tenant_id"`
	// Tier and Placement are where the tenant lived when it was archived.
	Tier      string `json:"tier"`
	Placement string `json:"placement"`
	// MigrationVersion is the tenant migration version of the tables the rows come from; a
	// restore loads them into tables at that version and migrates them up.
	MigrationVersion int64 `json:"migration_version"`
	// EmbeddingDimension is the width of the chunks' vectors; a restore needs the same.
	EmbeddingDimension int `json:"embedding_dimension"`
	// EmbeddingModel names the model that made the vectors, when the producer knew it.
	EmbeddingModel string `json:"embedding_model,omitempty"`
	// TenantCreatedAt is when the tenant was created; CreatedAt when the archive was written.
	TenantCreatedAt time.Time `json:"tenant_created_at"`
	CreatedAt       time.Time `json:"created_at"`
	// Tables are the archived tables, in load order.
	Tables []TableInfo `json:"tables"`
	// DerivedRows counts the rows of the tables a load rebuilds (schema.TableDerived), so the
	// load can check that it rebuilt the same.
	DerivedRows map[string]int64 `json:"derived_rows,omitempty"`
	// KeyHashes says the archive holds the tenant's API key hashes: a restore under the same id
	// makes the old keys work again.
	KeyHashes bool `json:"key_hashes"`
	// Settings are per-tenant registry settings (text search configuration, limits, ...) that a
	// restore applies when it knows them.
	Settings map[string]json.RawMessage `json:"settings,omitempty"`
}

// Table returns the manifest's entry of a table.
func (m *Manifest) Table(name string) (TableInfo, bool) {
	for _, t := range m.Tables {
		if t.Name == name {
			return t, true
		}
	}
	return TableInfo{}, false
}

// Key is an archived API key: its id and the SHA-256 of its secret, never the secret.
type Key struct {
	KeyID      string     `json:"key_id"`
	SecretHash []byte     `json:"secret_hash"`
	CreatedAt  time.Time  `json:"created_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Delegate and CreateDescendants are the key's scopes (registry.APIKey), so a restored key
	// can do exactly what it could. Archives written before they were carried have neither:
	// their keys come back without scopes.
	Delegate          bool `json:"delegate,omitempty"`
	CreateDescendants bool `json:"create_descendants,omitempty"`
}

type tableEnd struct {
	Table  string `json:"table"`
	Rows   int64  `json:"rows"`
	SHA256 string `json:"sha256"`
}

type archiveEnd struct {
	SHA256 string `json:"sha256"`
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// frameHeader: kind, payload length, CRC-32C of the payload.
const frameHeaderBytes = 1 + 4 + 4

// Writer writes one archive. Call BeginTable, WriteBlock (any number of times) and EndTable for
// each table of the manifest in order, WriteKeys when the manifest says so, then Close.
type Writer struct {
	dst   io.Writer
	zw    *zstd.Encoder
	bw    *bufio.Writer
	total hash.Hash
	m     Manifest
	next  int // index of the next table in m.Tables
	// current table
	table     string
	tableHash hash.Hash
	tableRows int64
	keysDone  bool
	closed    bool
	written   int64 // uncompressed bytes
}

// WriterOptions tunes a Writer.
type WriterOptions struct {
	// Level is the zstd level. Default zstd.SpeedDefault.
	Level zstd.EncoderLevel
	// Uncompressed writes the frames without zstd (for in-process copies, never to a file).
	Uncompressed bool
}

// NewWriter writes the magic line and the manifest to dst. The manifest's Format and
// FormatVersion are set by the writer.
func NewWriter(dst io.Writer, m Manifest, opts WriterOptions) (*Writer, error) {
	m.Format, m.FormatVersion = FormatName, FormatVersion
	w := &Writer{dst: dst, total: sha256.New(), m: m}
	if _, err := io.WriteString(dst, Magic); err != nil {
		return nil, fmt.Errorf("archive: write: %w", err)
	}
	inner := dst
	if !opts.Uncompressed {
		level := opts.Level
		if level == 0 {
			level = zstd.SpeedDefault
		}
		zw, err := zstd.NewWriter(dst, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, fmt.Errorf("archive: zstd: %w", err)
		}
		w.zw, inner = zw, zw
	}
	w.bw = bufio.NewWriterSize(inner, 256<<10)
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("archive: manifest: %w", err)
	}
	if err := w.frame(frameManifest, body); err != nil {
		return nil, err
	}
	return w, nil
}

// Manifest returns the manifest as written.
func (w *Writer) Manifest() Manifest { return w.m }

// Written is the number of uncompressed bytes written so far.
func (w *Writer) Written() int64 { return w.written }

func (w *Writer) frame(kind byte, payload []byte) error {
	if len(payload) > MaxFrameBytes {
		return fmt.Errorf("archive: frame of %d bytes exceeds %d", len(payload), MaxFrameBytes)
	}
	var hdr [frameHeaderBytes]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:5], uint32(len(payload)))
	binary.BigEndian.PutUint32(hdr[5:9], crc32.Checksum(payload, crcTable))
	if kind != frameEnd {
		w.total.Write(hdr[:])
		w.total.Write(payload)
	}
	if _, err := w.bw.Write(hdr[:]); err != nil {
		return fmt.Errorf("archive: write: %w", err)
	}
	if _, err := w.bw.Write(payload); err != nil {
		return fmt.Errorf("archive: write: %w", err)
	}
	w.written += int64(len(hdr) + len(payload))
	return nil
}

// BeginTable starts the next table of the manifest; name must be it.
func (w *Writer) BeginTable(name string) error {
	if w.table != "" {
		return fmt.Errorf("archive: table %s not ended", w.table)
	}
	if w.next >= len(w.m.Tables) || w.m.Tables[w.next].Name != name {
		return fmt.Errorf("archive: table %s is not the next table of the manifest", name)
	}
	w.table, w.tableHash, w.tableRows = name, sha256.New(), 0
	body, _ := json.Marshal(map[string]string{"table": name})
	return w.frame(frameTableStart, body)
}

// WriteBlock adds a block of rows to the current table: copyData is a complete binary COPY
// stream (header, rows tuples, trailer) of the manifest's columns.
func (w *Writer) WriteBlock(copyData []byte, rows int) error {
	if w.table == "" {
		return errors.New("archive: block outside a table")
	}
	payload := make([]byte, 4+len(copyData))
	binary.BigEndian.PutUint32(payload, uint32(rows))
	copy(payload[4:], copyData)
	w.tableHash.Write(payload)
	w.tableRows += int64(rows)
	return w.frame(frameBlock, payload)
}

// EndTable ends the current table. Its row count must be the manifest's.
func (w *Writer) EndTable() error {
	if w.table == "" {
		return errors.New("archive: no table to end")
	}
	want := w.m.Tables[w.next].Rows
	if w.tableRows != want {
		return fmt.Errorf("archive: table %s: wrote %d rows, the manifest says %d", w.table, w.tableRows, want)
	}
	body, _ := json.Marshal(tableEnd{Table: w.table, Rows: w.tableRows, SHA256: hex.EncodeToString(w.tableHash.Sum(nil))})
	w.table = ""
	w.next++
	return w.frame(frameTableEnd, body)
}

// WriteKeys adds the API key hashes; only when the manifest says KeyHashes.
func (w *Writer) WriteKeys(keys []Key) error {
	if !w.m.KeyHashes || w.keysDone {
		return errors.New("archive: key hashes not announced by the manifest, or written twice")
	}
	if keys == nil {
		keys = []Key{}
	}
	body, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	w.keysDone = true
	return w.frame(frameKeys, body)
}

// Close writes the end frame and flushes. It does not close dst.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.table != "" || w.next != len(w.m.Tables) {
		return errors.New("archive: not every table of the manifest was written")
	}
	if w.m.KeyHashes && !w.keysDone {
		return errors.New("archive: the manifest announces key hashes that were not written")
	}
	body, _ := json.Marshal(archiveEnd{SHA256: hex.EncodeToString(w.total.Sum(nil))})
	if err := w.frame(frameEnd, body); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("archive: write: %w", err)
	}
	if w.zw != nil {
		if err := w.zw.Close(); err != nil {
			return fmt.Errorf("archive: write: %w", err)
		}
	}
	return nil
}

// Abort releases the writer's resources without ending the archive (what is written is a
// truncated archive that every reader refuses).
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.zw != nil {
		_ = w.bw.Flush()
		_ = w.zw.Close()
	}
}

// Reader reads one archive, verifying every frame's CRC, every table's SHA-256 and row count and
// the archive's SHA-256 as it goes.
type Reader struct {
	zr    *zstd.Decoder
	br    *bufio.Reader
	total hash.Hash
	m     Manifest
	read  int64

	next      int // next table index
	table     string
	tableHash hash.Hash
	tableRows int64
	keys      []Key
	done      bool
	err       error
	buf       []byte
}

// ReaderOptions tunes a Reader.
type ReaderOptions struct {
	// Uncompressed reads frames written with WriterOptions.Uncompressed.
	Uncompressed bool
}

// NewReader reads the magic line and the manifest. It returns ErrNotArchive for anything that
// does not start like an archive, ErrFutureVersion for a newer format, and ErrTruncated or
// ErrCorrupt as they apply. Close the reader when done.
func NewReader(src io.Reader, opts ReaderOptions) (*Reader, error) {
	magic := make([]byte, len(Magic))
	if n, err := io.ReadFull(src, magic); err != nil || string(magic) != Magic {
		if err == nil || n > 0 || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("archive: %w (it does not start with %q)", ErrNotArchive, Magic[:len(Magic)-1])
		}
		return nil, fmt.Errorf("archive: read: %w", err)
	}
	r := &Reader{total: sha256.New()}
	inner := src
	if !opts.Uncompressed {
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, fmt.Errorf("archive: zstd: %w", err)
		}
		r.zr, inner = zr, zr
	}
	r.br = bufio.NewReaderSize(inner, 256<<10)
	kind, payload, err := r.frame()
	if err != nil {
		r.Close()
		if errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt) {
			// The first frame cannot be read: either not zstd at all, or cut short.
			return nil, err
		}
		return nil, err
	}
	if kind != frameManifest {
		r.Close()
		return nil, fmt.Errorf("archive: %w: first frame is %q, not the manifest", ErrCorrupt, kind)
	}
	var probe struct {
		Format        string `json:"format"`
		FormatVersion int    `json:"format_version"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil || probe.Format != FormatName {
		r.Close()
		return nil, fmt.Errorf("archive: %w: the manifest does not name the format %q", ErrNotArchive, FormatName)
	}
	if probe.FormatVersion > FormatVersion || probe.FormatVersion < 1 {
		r.Close()
		return nil, fmt.Errorf("archive: %w: format version %d, this tenantmem reads up to %d",
			ErrFutureVersion, probe.FormatVersion, FormatVersion)
	}
	if err := json.Unmarshal(payload, &r.m); err != nil {
		r.Close()
		return nil, fmt.Errorf("archive: %w: manifest: %w", ErrCorrupt, err)
	}
	return r, nil
}

// Manifest returns the archive's manifest.
func (r *Reader) Manifest() Manifest { return r.m }

// Read is the number of uncompressed bytes read so far.
func (r *Reader) Read() int64 { return r.read }

// Close releases the decoder. It does not close the source.
func (r *Reader) Close() {
	if r.zr != nil {
		r.zr.Close()
		r.zr = nil
	}
}

// frame reads one frame. The payload is valid until the next call.
func (r *Reader) frame() (byte, []byte, error) {
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
		return 0, nil, r.readErr(err)
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	if n > MaxFrameBytes {
		return 0, nil, fmt.Errorf("archive: %w: frame of %d bytes", ErrCorrupt, n)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	payload := r.buf[:n]
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return 0, nil, r.readErr(err)
	}
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[5:9]) {
		return 0, nil, fmt.Errorf("archive: %w: checksum mismatch in a %q frame", ErrCorrupt, hdr[0])
	}
	if hdr[0] != frameEnd {
		r.total.Write(hdr[:])
		r.total.Write(payload)
	}
	r.read += int64(len(hdr)) + int64(n)
	return hdr[0], payload, nil
}

func (r *Reader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("archive: %w (after %d bytes)", ErrTruncated, r.read)
	}
	// zstd reports damaged input with its own errors: the archive is corrupted, or cut short
	// inside a compressed block.
	if errors.Is(err, zstd.ErrMagicMismatch) {
		return fmt.Errorf("archive: %w: %w", ErrNotArchive, err)
	}
	return fmt.Errorf("archive: %w: %w", ErrCorrupt, err)
}

// NextTable advances to the next table and returns its manifest entry. After the last table it
// reads the keys (when present) and verifies the end frame, then returns io.EOF.
func (r *Reader) NextTable() (TableInfo, error) {
	if r.err != nil {
		return TableInfo{}, r.err
	}
	if r.table != "" {
		r.err = errors.New("archive: NextTable before the current table's blocks were read")
		return TableInfo{}, r.err
	}
	if r.done {
		return TableInfo{}, io.EOF
	}
	for {
		kind, payload, err := r.frame()
		if err != nil {
			r.err = err
			return TableInfo{}, err
		}
		switch kind {
		case frameTableStart:
			var s struct {
				Table string `json:"table"`
			}
			if err := json.Unmarshal(payload, &s); err != nil || r.next >= len(r.m.Tables) || r.m.Tables[r.next].Name != s.Table {
				r.err = fmt.Errorf("archive: %w: unexpected table %q", ErrCorrupt, s.Table)
				return TableInfo{}, r.err
			}
			r.table, r.tableHash, r.tableRows = s.Table, sha256.New(), 0
			return r.m.Tables[r.next], nil
		case frameKeys:
			if !r.m.KeyHashes || r.next != len(r.m.Tables) {
				r.err = fmt.Errorf("archive: %w: unexpected key frame", ErrCorrupt)
				return TableInfo{}, r.err
			}
			if err := json.Unmarshal(payload, &r.keys); err != nil {
				r.err = fmt.Errorf("archive: %w: keys: %w", ErrCorrupt, err)
				return TableInfo{}, r.err
			}
			if r.keys == nil {
				r.keys = []Key{}
			}
		case frameEnd:
			if r.next != len(r.m.Tables) || (r.m.KeyHashes && r.keys == nil) {
				r.err = fmt.Errorf("archive: %w: it ends before all its tables", ErrCorrupt)
				return TableInfo{}, r.err
			}
			var e archiveEnd
			if err := json.Unmarshal(payload, &e); err != nil || e.SHA256 != hex.EncodeToString(r.total.Sum(nil)) {
				r.err = fmt.Errorf("archive: %w: the archive's SHA-256 does not match", ErrCorrupt)
				return TableInfo{}, r.err
			}
			r.done = true
			return TableInfo{}, io.EOF
		default:
			r.err = fmt.Errorf("archive: %w: unexpected %q frame between tables", ErrCorrupt, kind)
			return TableInfo{}, r.err
		}
	}
}

// NextBlock returns the next block of the current table: a complete binary COPY stream and its
// row count. The bytes are valid until the next call. At the table's end it verifies the
// table's row count and SHA-256 and returns io.EOF.
func (r *Reader) NextBlock() ([]byte, int, error) {
	if r.err != nil {
		return nil, 0, r.err
	}
	if r.table == "" {
		return nil, 0, errors.New("archive: NextBlock outside a table")
	}
	kind, payload, err := r.frame()
	if err != nil {
		r.err = err
		return nil, 0, err
	}
	switch kind {
	case frameBlock:
		if len(payload) < 4 {
			r.err = fmt.Errorf("archive: %w: short block", ErrCorrupt)
			return nil, 0, r.err
		}
		r.tableHash.Write(payload)
		rows := int(binary.BigEndian.Uint32(payload))
		r.tableRows += int64(rows)
		return payload[4:], rows, nil
	case frameTableEnd:
		var e tableEnd
		if err := json.Unmarshal(payload, &e); err != nil || e.Table != r.table {
			r.err = fmt.Errorf("archive: %w: table %s: bad trailer", ErrCorrupt, r.table)
			return nil, 0, r.err
		}
		want := r.m.Tables[r.next].Rows
		if e.Rows != r.tableRows || e.Rows != want {
			r.err = fmt.Errorf("archive: %w: table %s has %d rows, its trailer says %d and the manifest %d",
				ErrCorrupt, r.table, r.tableRows, e.Rows, want)
			return nil, 0, r.err
		}
		if e.SHA256 != hex.EncodeToString(r.tableHash.Sum(nil)) {
			r.err = fmt.Errorf("archive: %w: table %s: SHA-256 mismatch", ErrCorrupt, r.table)
			return nil, 0, r.err
		}
		r.table = ""
		r.next++
		return nil, 0, io.EOF
	default:
		r.err = fmt.Errorf("archive: %w: unexpected %q frame in table %s", ErrCorrupt, kind, r.table)
		return nil, 0, r.err
	}
}

// Keys returns the archived API key hashes, once NextTable has returned io.EOF (nil when the
// archive has none).
func (r *Reader) Keys() []Key { return r.keys }
