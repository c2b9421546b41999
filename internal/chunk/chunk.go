package chunk

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"strings"
)

// Chunk is one piece of a document returned by Split.
type Chunk struct {
	// Index is the position of the chunk in the slice returned by Split, from 0 to n-1. A parent
	// always comes before its children, and the children of a parent follow it directly.
	Index int
	// Level is the height of the chunk in the two-level tree: 1 for a parent that has children, 0 for
	// every chunk without children, which is either a child or a parent that was small enough to be a
	// leaf. The chunks of Level 0 therefore cover the whole document; the chunks of Level 1 are the
	// wider context around them.
	Level int
	// ParentIndex is the Index of the chunk's parent, or -1 for a top-level chunk.
	ParentIndex int
	// Content is the text of the chunk: exactly the document bytes from Start to End, never empty and
	// never starting or ending with whitespace. It shares memory with the document passed to Split.
	Content string
	// ContentHash is the lowercase hex SHA-256 of Content.
	ContentHash string
	// Tokens is CountTokens(Content). It never exceeds the window size of the chunk's level.
	Tokens int
	// Start is the byte offset of Content in the document.
	Start int
	// End is the byte offset just after Content in the document.
	End int
	// Metadata holds the chunk-level keys that the document type produces: "section" (markdown),
	// "email_part" (email), "speakers" and "message_count" (chat). It is never nil and is owned by
	// the chunk; the caller merges in the document's own metadata.
	Metadata map[string]any
}

// Split cuts content into hierarchical chunks according to its document type and the window sizes of
// opts (see Options for the defaulting rules).
//
// Every document type is first divided into segments: markdown into heading sections, email into
// headers, body, quoted reply and signature, chat into messages, every other type into one segment
// (source code prefers line ends as cut points). Each segment is then cut into parent windows of at
// most opts.ParentSize tokens, and each parent into child windows of at most opts.ChildSize tokens.
// A parent whose only child would equal it is returned alone, as a leaf.
//
// Split returns a *FieldError for an unknown document type ("document_type"), invalid options (the
// option's name) or blank content ("content"). It is safe for concurrent use; its running time and
// allocations are linear in the length of content.
func Split(docType string, content string, opts Options) ([]Chunk, error) {
	o, err := opts.resolve(docType)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(content) == "" {
		return nil, &FieldError{Field: "content", Message: "must not be empty or whitespace only"}
	}
	b := &builder{doc: content, opts: o}
	switch docType {
	case "markdown":
		b.splitSegments(markdownSections(content), cutProse)
	case "email":
		b.splitSegments(emailParts(content), cutProse)
	case "chat":
		b.splitChat()
	case "code":
		b.splitSegments([]segment{{end: len(content)}}, cutLines)
	default:
		b.splitSegments([]segment{{end: len(content)}}, cutProse)
	}
	return b.chunks, nil
}

// segment is a part of the document that is chunked on its own, with the metadata of its chunks.
type segment struct {
	start, end int
	meta       map[string]any
}

// builder accumulates the chunks of one Split call.
type builder struct {
	doc      string
	opts     Options
	w        windower
	chunks   []Chunk
	parents  []span
	children []span
	hashBuf  []byte
}

// splitSegments windows every segment into parents and every parent into children.
func (b *builder) splitSegments(segs []segment, mode cutMode) {
	for _, s := range segs {
		b.parents = b.w.split(b.parents[:0], b.doc[s.start:s.end], s.start, b.opts.ParentSize, b.opts.ParentOverlap, mode)
		for _, p := range b.parents {
			b.children = b.w.split(b.children[:0], b.doc[p.start:p.end], p.start, b.opts.ChildSize, b.opts.ChildOverlap, mode)
			parent := b.add(p, -1, maps.Clone(s.meta))
			for _, c := range b.children {
				b.addChild(parent, c, maps.Clone(s.meta))
			}
		}
	}
}

// add appends a chunk for sp and returns its index. The chunk takes ownership of meta.
func (b *builder) add(sp span, parent int, meta map[string]any) int {
	content := b.doc[sp.start:sp.end]
	b.hashBuf = append(b.hashBuf[:0], content...)
	sum := sha256.Sum256(b.hashBuf)
	if meta == nil {
		meta = map[string]any{}
	}
	b.chunks = append(b.chunks, Chunk{
		Index:       len(b.chunks),
		ParentIndex: parent,
		Content:     content,
		ContentHash: hex.EncodeToString(sum[:]),
		Tokens:      sp.tokens,
		Start:       sp.start,
		End:         sp.end,
		Metadata:    meta,
	})
	return len(b.chunks) - 1
}

// addChild appends a child of the chunk at index parent, unless it would repeat its parent. The child
// takes ownership of meta.
func (b *builder) addChild(parent int, sp span, meta map[string]any) {
	p := &b.chunks[parent]
	if sp.start == p.Start && sp.end == p.End {
		return
	}
	p.Level = 1
	b.add(sp, parent, meta)
}
