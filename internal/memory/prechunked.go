package memory

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/tenantmem/tenantmem/internal/chunk"
)

// MaxChunksPerRequest bounds the chunks of one pre-chunked document.
const MaxChunksPerRequest = 10000

// ChunkInput is one chunk of a document given already chunked (DocumentAddParams.Chunks): its
// text, optional metadata and, optionally, its embedding, computed by the client with the model
// of this deployment. The text index and search treat such chunks like any other.
type ChunkInput struct {
	// Content is the chunk's text: not blank, valid UTF-8 without NUL.
	Content string `json:"content"`
	// Metadata is a JSON object of at most 64 KB, stored as the chunk's metadata.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// Embedding is the chunk's vector: exactly the deployment's dimension, finite, not all
	// zero. Only leaves (level 0) have one. Without it, the chunk is embedded at ingest like any
	// other (or queued when the provider fails).
	Embedding []float32 `json:"embedding,omitempty"`
	// Level is 0 for a leaf (embedded and searched, the default) and 1 or more for a parent,
	// which only gives its children wider context.
	Level int `json:"level,omitempty"`
	// Parent is the position, in the same list, of the chunk's parent: an earlier chunk of a
	// higher level. Nil for a top-level chunk.
	Parent *int `json:"parent,omitempty"`
}

// prechunked is a validated list of client chunks, in the shape the ingest path uses.
type prechunked struct {
	chunks []chunk.Chunk
	// vectors holds the client's vector of chunk i, when it gave one.
	vectors map[int][]float32
	// bytes is the size of the document: its leaves' content.
	bytes int
}

// validatePrechunked checks client chunks, naming the field of the first problem
// ("chunks[3].embedding"), and converts them.
func validatePrechunked(in []ChunkInput, dim, maxBytes int) (prechunked, error) {
	var out prechunked
	switch {
	case len(in) == 0:
		return out, invalid("chunks", "must hold at least one chunk")
	case len(in) > MaxChunksPerRequest:
		return out, tooLarge("chunks", "at most %d chunks per document, got %d", MaxChunksPerRequest, len(in))
	}
	out.chunks = make([]chunk.Chunk, len(in))
	out.vectors = map[int][]float32{}
	total := 0
	for i, c := range in {
		field := fmt.Sprintf("chunks[%d]", i)
		total += len(c.Content)
		switch {
		case total > maxBytes:
			return out, tooLarge(field+".content", "the chunks hold more than %d bytes of text", maxBytes)
		case strings.TrimSpace(c.Content) == "":
			return out, invalid(field+".content", "must not be empty or white space only")
		}
		if err := checkText(field+".content", c.Content); err != nil {
			return out, err
		}
		md, err := validateMetadata(field+".metadata", c.Metadata, true)
		if err != nil {
			return out, err
		}
		meta := map[string]any{}
		if md != nil {
			dec := json.NewDecoder(bytes.NewReader(md))
			dec.UseNumber()
			if err := dec.Decode(&meta); err != nil {
				return out, invalid(field+".metadata", "must be a JSON object: %v", err)
			}
		}
		if c.Level < 0 || c.Level > math.MaxInt16 {
			return out, invalid(field+".level", "must be between 0 and %d", math.MaxInt16)
		}
		parent := -1
		if c.Parent != nil {
			p := *c.Parent
			switch {
			case p < 0 || p >= i:
				return out, invalid(field+".parent", "must be the position of an earlier chunk (0 to %d)", i-1)
			case in[p].Level <= c.Level:
				return out, invalid(field+".parent", "chunk %d has level %d; a parent's level must be higher than %d", p, in[p].Level, c.Level)
			}
			parent = p
		}
		if c.Embedding != nil {
			if c.Level != 0 {
				return out, invalid(field+".embedding", "only leaves (level 0) have an embedding")
			}
			if err := checkClientVector(field+".embedding", c.Embedding, dim); err != nil {
				return out, err
			}
			out.vectors[i] = c.Embedding
		}
		sum := sha256.Sum256([]byte(c.Content))
		out.chunks[i] = chunk.Chunk{
			Index: i, Level: c.Level, ParentIndex: parent, Content: c.Content,
			ContentHash: hex.EncodeToString(sum[:]), Tokens: chunk.CountTokens(c.Content), Metadata: meta,
			Start: -1, End: -1,
		}
		if c.Level == 0 {
			out.bytes += len(c.Content)
		}
	}
	return out, nil
}

// checkClientVector is checkVectors for one vector a client gave, naming its field.
func checkClientVector(field string, v []float32, dim int) error {
	if len(v) != dim {
		return invalid(field, "has %d values; this deployment's embeddings have %d", len(v), dim)
	}
	zero := true
	for j, x := range v {
		switch {
		case math.IsNaN(float64(x)):
			return invalid(fmt.Sprintf("%s[%d]", field, j), "NaN is not a number; embeddings must be finite")
		case math.IsInf(float64(x), 0):
			return invalid(fmt.Sprintf("%s[%d]", field, j), "infinite values are not allowed; embeddings must be finite")
		case x != 0:
			zero = false
		}
	}
	if zero {
		return invalid(field, "is all zeros; cosine distance is undefined for it")
	}
	return nil
}
