package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Blocks are cut at BlockRows rows or BlockBytes bytes, whichever comes first: small enough that
// a load holds one block in memory and commits often enough to report progress, large enough that
// per-block costs (a frame, a temporary table, a statement) vanish.
const (
	BlockRows  = 5000
	BlockBytes = 4 << 20
)

// copySignature starts every binary COPY stream; a header is the signature, a flags word and a
// header extension length, both zero here.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

func copyHeader() []byte {
	h := make([]byte, 0, len(copySignature)+8)
	h = append(h, copySignature...)
	return append(h, 0, 0, 0, 0, 0, 0, 0, 0)
}

var copyTrailer = []byte{0xff, 0xff}

// errCopyFormat is a binary COPY stream this package cannot split.
var errCopyFormat = errors.New("malformed binary COPY stream")

// copySplitter is the io.Writer a COPY ... TO STDOUT (FORMAT binary) writes into: it parses the
// stream as it arrives and calls emit with blocks of at most maxRows tuples and about maxBytes
// bytes, each a complete binary COPY stream of its own. The block passed to emit is reused
// afterwards. Call finish after the COPY returned.
type copySplitter struct {
	maxRows, maxBytes int
	emit              func(block []byte, rows int) error

	pending  []byte // bytes received and not parsed yet
	headerOK bool
	ended    bool
	block    []byte
	rows     int
	total    int64
}

func newCopySplitter(maxRows, maxBytes int, emit func(block []byte, rows int) error) *copySplitter {
	return &copySplitter{maxRows: maxRows, maxBytes: maxBytes, emit: emit, block: copyHeader()}
}

// Write implements io.Writer.
func (s *copySplitter) Write(p []byte) (int, error) {
	if s.ended {
		return len(p), nil
	}
	s.pending = append(s.pending, p...)
	consumed, err := s.parse(s.pending)
	if err != nil {
		return 0, err
	}
	rest := copy(s.pending, s.pending[consumed:])
	s.pending = s.pending[:rest]
	return len(p), nil
}

// parse consumes as many complete items (header, tuples, trailer) of buf as it can.
func (s *copySplitter) parse(buf []byte) (int, error) {
	p := 0
	if !s.headerOK {
		if len(buf) < len(copySignature)+8 {
			return 0, nil
		}
		if !bytes.Equal(buf[:len(copySignature)], copySignature) {
			return 0, fmt.Errorf("%w: bad signature", errCopyFormat)
		}
		ext := int(binary.BigEndian.Uint32(buf[len(copySignature)+4:]))
		if len(buf) < len(copySignature)+8+ext {
			return 0, nil
		}
		p = len(copySignature) + 8 + ext
		s.headerOK = true
	}
	for !s.ended {
		if len(buf)-p < 2 {
			return p, nil
		}
		fields := int16(binary.BigEndian.Uint16(buf[p:]))
		if fields == -1 {
			s.ended = true
			return len(buf), s.flush()
		}
		if fields < 0 {
			return 0, fmt.Errorf("%w: field count %d", errCopyFormat, fields)
		}
		q := p + 2
		complete := true
		for range fields {
			if len(buf)-q < 4 {
				complete = false
				break
			}
			n := int32(binary.BigEndian.Uint32(buf[q:]))
			q += 4
			if n == -1 {
				continue
			}
			if n < 0 || n > MaxFrameBytes/2 {
				return 0, fmt.Errorf("%w: field length %d", errCopyFormat, n)
			}
			if len(buf)-q < int(n) {
				complete = false
				break
			}
			q += int(n)
		}
		if !complete {
			return p, nil
		}
		s.block = append(s.block, buf[p:q]...)
		p = q
		s.rows++
		s.total++
		if s.rows >= s.maxRows || len(s.block) >= s.maxBytes {
			if err := s.flush(); err != nil {
				return 0, err
			}
		}
	}
	return len(buf), nil
}

func (s *copySplitter) flush() error {
	if s.rows == 0 {
		return nil
	}
	s.block = append(s.block, copyTrailer...)
	if err := s.emit(s.block, s.rows); err != nil {
		return err
	}
	s.block, s.rows = s.block[:len(copySignature)+8], 0
	return nil
}

// finish checks that the stream ended with its trailer and returns the number of tuples.
func (s *copySplitter) finish() (int64, error) {
	if !s.ended {
		return s.total, fmt.Errorf("%w: the stream ended without its trailer", errCopyFormat)
	}
	return s.total, nil
}

// countCopyTuples checks that block is one well-formed binary COPY stream of tuples with
// fields fields each, and returns the number of tuples. A load calls it before handing an
// archive's block to the server, so a malformed block is refused with an error of ours.
func countCopyTuples(block []byte, fields int) (int, error) {
	if len(block) < len(copySignature)+8+2 || !bytes.Equal(block[:len(copySignature)], copySignature) {
		return 0, fmt.Errorf("%w: bad header", errCopyFormat)
	}
	p := len(copySignature) + 4
	ext := int(binary.BigEndian.Uint32(block[p:]))
	p += 4 + ext
	rows := 0
	for {
		if p+2 > len(block) {
			return 0, fmt.Errorf("%w: no trailer", errCopyFormat)
		}
		n := int16(binary.BigEndian.Uint16(block[p:]))
		p += 2
		if n == -1 {
			if p != len(block) {
				return 0, fmt.Errorf("%w: data after the trailer", errCopyFormat)
			}
			return rows, nil
		}
		if int(n) != fields {
			return 0, fmt.Errorf("%w: a tuple has %d fields, want %d", errCopyFormat, n, fields)
		}
		for range n {
			if p+4 > len(block) {
				return 0, fmt.Errorf("%w: truncated tuple", errCopyFormat)
			}
			l := int32(binary.BigEndian.Uint32(block[p:]))
			p += 4
			if l == -1 {
				continue
			}
			if l < 0 || p+int(l) > len(block) {
				return 0, fmt.Errorf("%w: truncated field", errCopyFormat)
			}
			p += int(l)
		}
		rows++
	}
}
