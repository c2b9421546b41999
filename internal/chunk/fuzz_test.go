package chunk

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzSplit checks the invariants of Split on arbitrary input: no panic, only *FieldError errors
// (and exactly for blank content or invalid options), and valid chunks otherwise (see requireValid:
// non-empty trimmed content at its offsets, correct hashes and token counts, window sizes respected,
// valid parent indexes, no child equal to its parent, every non-blank rune covered by a leaf).
func FuzzSplit(f *testing.F) {
	seeds := []string{
		"hello world",
		"# A\n\ntext\n\n## B\n\n```\n# no\n```\nmore",
		"[12:03] alice: hi\nbob: yo\n*** x ***\n<c> z\ncontinued",
		"From: a\nTo: b\nSubject: s\n\nbody.\n\n-- \nsig\n\nOn x wrote:\n> q\n> q2\nreply\nThanks,\nZ",
		"日本語の文章です。次の文。\r\n\r\n😀😀 — “x”",
		strings.Repeat("word ", 300),
		strings.Repeat("x", 3000),
		" \t\n",
		"\xff\xfe\x00",
		prose(1, 400),
	}
	for i, s := range seeds {
		f.Add(uint8(i), s, uint16(0), uint16(0), uint8(0), uint8(0))
		f.Add(uint8(i+3), s, uint16(40), uint16(20), uint8(5), uint8(3))
	}
	types := DocumentTypes()
	f.Fuzz(func(t *testing.T, typ uint8, content string, parentSize, childSize uint16, parentOverlap, childOverlap uint8) {
		docType := types[int(typ)%len(types)]
		opts := Options{
			ParentSize:    int(parentSize % 1024),
			ChildSize:     int(childSize % 1024),
			ParentOverlap: int(parentOverlap) - 1,
			ChildOverlap:  int(childOverlap) - 1,
		}
		chunks, err := Split(docType, content, opts)
		if err != nil {
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.True(t, errors.Is(err, ErrInvalid))
			_, optErr := opts.resolve(docType)
			require.True(t, optErr != nil || strings.TrimSpace(content) == "", "unexpected error %v", err)
			return
		}
		resolved, err := opts.resolve(docType)
		require.NoError(t, err)
		requireValid(t, content, resolved.ParentSize, resolved.ChildSize, chunks)
	})
}
