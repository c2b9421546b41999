package schema

import "testing"

// TestContiguous: a schema's version is the highest known version below which nothing known is
// missing; versions a newer release applied count.
func TestContiguous(t *testing.T) {
	t.Parallel()
	known := []int64{1, 2, 3, 5, 8, 9}
	for _, tc := range []struct {
		given   string
		applied []int64
		want    int64
	}{
		{"nothing applied", nil, 0},
		{"all applied", []int64{1, 2, 3, 5, 8, 9}, 9},
		{"behind", []int64{1, 2, 3}, 3},
		{"a hole below the highest", []int64{1, 2, 3, 5, 9}, 5},
		{"the first missing", []int64{2, 3, 5, 8, 9}, 0},
		{"a newer release's version applied", []int64{1, 2, 3, 5, 8, 9, 12}, 12},
		{"a newer release's version over a hole", []int64{1, 2, 3, 8, 9, 12}, 3},
	} {
		if got := contiguous(known, tc.applied); got != tc.want {
			t.Errorf("%s: contiguous(%v, %v) = %d, want %d", tc.given, known, tc.applied, got, tc.want)
		}
	}
}
