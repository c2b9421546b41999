package memory

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseWebQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given string
		want  webQuery
	}{
		{"quick brown fox", webQuery{pos: "quick brown fox"}},
		{`fox "lazy dog" -cat`, webQuery{pos: `fox lazy dog`, must: `"lazy dog"`, not: `"cat"`}},
		{`fox or dog`, webQuery{pos: "fox dog"}},
		{`-"big cat" -bird wolf`, webQuery{pos: "wolf", not: `"big cat" or "bird"`}},
		{`"unbalanced quote`, webQuery{pos: "unbalanced quote", must: `"unbalanced quote"`}},
		{`- or "" -`, webQuery{}},
		{`state-of-the-art`, webQuery{pos: "state-of-the-art"}},
		{`a"b`, webQuery{pos: "a b", must: `"b"`}},
		{"   ", webQuery{}},
	} {
		require.Equal(t, tc.want, parseWebQuery(tc.given), tc.given)
	}
}
