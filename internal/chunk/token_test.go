package chunk

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCountTokens checks the estimate against cl100k_base counts that are known exactly: the examples
// of OpenAI's tiktoken cookbook ("How to count tokens with tiktoken"), and strings whose every
// pre-token is a single cl100k token (common English words with their leading space, digit groups of at
// most three digits, common punctuation, "\n\n").
func TestCountTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given  string
		expect int // real cl100k_base count
	}{
		{given: "", expect: 0},
		{given: "hello world", expect: 2},
		{given: "Hello", expect: 1},
		{given: "Hello, world!", expect: 4},
		{given: "The quick brown fox jumps over the lazy dog.", expect: 10},
		{given: "tiktoken is great!", expect: 6},           // cookbook
		{given: "antidisestablishmentarianism", expect: 6}, // cookbook
		{given: "2 + 2 = 4", expect: 7},                    // cookbook
		{given: "お誕生日おめでとう", expect: 9},                    // cookbook
		{given: "1234567", expect: 3},                      // "123" "456" "7"
		{given: "3.14159", expect: 4},                      // "3" "." "141" "59"
		{given: "100 200 300", expect: 5},                  // a space before a digit is its own token
		{given: "I'm", expect: 2},
		{given: "don't", expect: 2},
		{given: "hello  world", expect: 3},
		{given: "\n\n", expect: 1},
		{given: "The cat sat on the mat.", expect: 7},
		{given: "What is the capital of France?", expect: 7},
		{given: "This is a test.", expect: 5},
		{given: "Good morning, how are you today?", expect: 8},
		{given: "one two three four five six seven eight nine ten", expect: 10},
		{given: "We went to the store and bought some milk.", expect: 10},
		{given: "New York City", expect: 3},
		{given: "a b c d e f g", expect: 7},
	}
	gotTotal, expectTotal := 0, 0
	for _, tt := range tests {
		got := CountTokens(tt.given)
		tolerance := max(2, tt.expect/4)
		require.InDelta(t, tt.expect, got, float64(tolerance), "CountTokens(%q)", tt.given)
		gotTotal += got
		expectTotal += tt.expect
	}
	require.GreaterOrEqual(t, len(tests), 15)
	require.InEpsilon(t, expectTotal, gotTotal, 0.15, "total over the table: got %d, cl100k %d", gotTotal, expectTotal)
}

func TestCountTokensProperties(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		given  string
		expect func(t *testing.T, got int)
	}{
		{
			name:   "non-blank text has tokens",
			given:  "x",
			expect: func(t *testing.T, got int) { require.Equal(t, 1, got) },
		},
		{
			name:   "invalid UTF-8 is counted, not rejected",
			given:  "\xff\xfe abc \xc3",
			expect: func(t *testing.T, got int) { require.Positive(t, got) },
		},
		{
			name:  "a long word costs about one token per five letters",
			given: strings.Repeat("x", 1000),
			expect: func(t *testing.T, got int) {
				require.InDelta(t, 200, got, 20)
			},
		},
		{
			name:   "camelCase humps are separate words",
			given:  "getUserNameFromHTTPServer",
			expect: func(t *testing.T, got int) { require.Equal(t, 6, got) },
		},
		{
			name:   "a run of one punctuation character merges",
			given:  strings.Repeat("-", 16),
			expect: func(t *testing.T, got int) { require.Equal(t, 2, got) },
		},
		{
			name:  "prose averages about 1.3 tokens per word",
			given: prose(1, 2000),
			expect: func(t *testing.T, got int) {
				require.InDelta(t, 1.25, float64(got)/2000, 0.2)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.expect(t, CountTokens(tt.given))
		})
	}
}

func TestCountTokensIsSubadditiveAtLineStarts(t *testing.T) {
	t.Parallel()
	// Chat packing relies on this: the count of a run of lines is at most the sum of the counts of
	// its lines (".\n\n" is one token, ".\n" and "\n" are two).
	doc := prose(7, 500) + "\n  indented line\n\tfunc main() {\n}\n"
	lines := strings.SplitAfter(doc, "\n")
	sum := 0
	for _, l := range lines {
		sum += CountTokens(l)
	}
	require.LessOrEqual(t, CountTokens(doc), sum)
	require.InEpsilon(t, CountTokens(doc), sum, 0.05)
}

func BenchmarkCountTokens(b *testing.B) {
	doc := prose(3, 200_000)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		CountTokens(doc)
	}
}
