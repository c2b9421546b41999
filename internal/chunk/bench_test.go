package chunk

import (
	"strings"
	"testing"
)

// BenchmarkSplit chunks a 1 MB document of every kind with the default options.
func BenchmarkSplit(b *testing.B) {
	docs := map[string]string{"text": prose(81, 190_000)}
	for typ, doc := range sampleDocs() {
		if typ == "markdown" || typ == "chat" || typ == "email" || typ == "code" {
			docs[typ] = strings.Repeat(doc+"\n\n", 1_000_000/len(doc)+1)[:1_000_000]
		}
	}
	for _, typ := range []string{"text", "markdown", "chat", "email", "code"} {
		doc := docs[typ]
		b.Run(typ, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			chunks := 0
			for b.Loop() {
				c, err := Split(typ, doc, Options{})
				if err != nil {
					b.Fatal(err)
				}
				chunks = len(c)
			}
			b.ReportMetric(float64(chunks), "chunks/op")
		})
	}
}
