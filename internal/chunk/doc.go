// Package chunk cuts documents into hierarchical chunks for embedding and retrieval. It is pure Go and
// has no I/O: [Split] takes a document type, the content and window sizes ([Options]) and returns
// [Chunk] values that the caller stores and embeds.
//
// # Hierarchy
//
// Every chunk is either a parent (ParentIndex -1) or a child of one parent. Parents are windows of up
// to Options.ParentSize tokens that give a search hit its wider context; children are windows of up to
// Options.ChildSize tokens inside a parent. Level is the height in this tree: 1 for a parent with
// children, 0 for a chunk without children. A parent that fits in a single child window is returned
// alone, with Level 0 and no children, so a short document yields exactly one chunk and no child ever
// repeats its parent (the Python original stored such a document twice and embedded it twice). The
// chunks of Level 0 cover the whole document and are the natural unit to embed and search. Chunks are
// returned in document order, each parent directly followed by its children.
//
// # Windows
//
// A window grows piece by piece (see [CountTokens]) until the next piece would exceed its size. Unless
// it reaches the end of its text, it is then cut back to the last paragraph or sentence end that keeps
// at least 80% of its tokens; failing that to the last line end, then to the last ", ", "; " or ": "
// in that last fifth; failing that it ends at a word boundary (a piece boundary). Source code ("code")
// prefers blank lines and line ends instead of sentence ends. The next window starts (window tokens −
// overlap) tokens after the start of the previous one, moved to the nearest sentence end (line end for
// code) if one lies within half the overlap of that point, so consecutive windows share between half
// and one and a half times the overlap, the shared text usually starts with a whole sentence, and every
// window makes progress. Windows never split a piece; pieces are at most 32 bytes, so even text
// without spaces is cut and no chunk exceeds its window size.
//
// # Document types
//
// Markdown is divided at its ATX headings first: each section keeps its heading line and carries the
// heading path in the "section" metadata key ("Intro > Setup"); sections larger than a parent window
// are windowed. Chat transcripts are divided into messages ("[12:03] alice: hi", "alice: hi",
// "<alice> hi", "*** alice joined ***"); whole messages are packed into parents and, inside each
// parent, into children, and each chunk lists its "speakers" and "message_count". Email is divided into
// headers, body, quoted reply and signature, each chunked on its own with "email_part" set to
// "headers", "body", "quoted" or "signature". Other types are windowed as a whole; see
// [DefaultOptions] for the sizes of every type. Unlike the Python original, the sizes do not shrink
// or grow with the length of the document, and caller-supplied sizes are honoured.
//
// # Token estimate
//
// [CountTokens] estimates cl100k_base token counts (the encoding of OpenAI's text-embedding-3 models)
// without the BPE merge table, so it needs no model files, no network and no allocation. It
// reproduces cl100k's pre-tokenizer (contractions, letter runs, groups of one to three digits,
// punctuation runs, whitespace) and prices each piece by its kind and length: common words, digit
// groups and short punctuation are one token, long or rare words about one token per five letters,
// CJK about one token per character. The tests check it against exact cl100k counts; on English prose
// and code it is within a few percent, and it errs towards counting long rare words high.
//
// That is good enough because the counts only size windows. A window a few percent larger or smaller
// than nominal retrieves just as well, and nothing downstream depends on the exact count. The one hard
// limit, the 8191-token input limit of OpenAI's embedding models, is an order of magnitude above the
// default windows (at most 800 tokens for parents, 400 for children). Only a caller who sets a size
// close to [MaxSize] relies on the estimate for that limit and should leave headroom.
//
// # Concurrency and memory
//
// All functions are safe for concurrent use. Split runs in time and memory linear in the length of the
// content; the Content of every chunk is a substring of the input, so the chunks keep the input alive.
package chunk
