// Package embed turns texts into vectors. A [Provider] has a name, a fixed dimension and an
// Embed method returning one vector per text, in order. Two providers exist, chosen by [New]
// from a [Config]:
//
//   - [Builtin] ("builtin", the default): a deterministic, offline feature-hashing embedder.
//   - [OpenAI] ("openai"): any server speaking the OpenAI embeddings API (OpenAI, Ollama, vLLM,
//     text-embeddings-inference), with batching, a provider-wide concurrency limit, retries and
//     response validation.
//
// Both are safe for concurrent use; build one per configuration and share it.
//
// # The builtin embedder
//
// The text is NFKC-normalised and lower-cased, then split into words (runs of letters, digits
// and combining marks; apostrophes inside a word are dropped). Words get a light English
// stemming (plural, "ing", "ed"). About seventy English stop words are dropped unless the text
// has nothing else. The features are the stems, the pairs of consecutive remaining words, and
// the character trigrams of each stem with boundary markers. Each feature is hashed (FNV-1a,
// then the splitmix64 finaliser) to one of Dimension buckets and a sign, weighted by its group
// (word 1.0, pair 0.6, trigram 0.3) times 1+ln(tf), where tf is its count in the text, and the
// vector is L2-normalised. Every floating-point step is rounded explicitly (no fused
// multiply-add, no assembly logarithm), which is what makes the result portable. A text of 300
// words takes some 30µs on one core.
//
// Good for: working offline (development, CI, air-gapped installs), tests and deterministic
// benchmarks (the same text gives the same vector, bit for bit, on every machine and run, for a
// given version of this module), and lexical matching that tolerates word order, inflections,
// accents, case and small typos: a query shares features with the documents that use its words.
//
// Not good for: meaning. It knows no synonyms ("car" and "automobile" are unrelated), no
// paraphrases, no other languages' morphology, and no word importance beyond stop words and
// sublinear counts. Use a real embedding model in production when semantic recall matters.
//
// Texts without any letter or digit (empty, whitespace, punctuation) never get the zero vector,
// whose cosine similarity is undefined (NaN in pgvector): they all get the same fixed unit vector
// with every component 1/√Dimension, which is nearly orthogonal to real texts.
//
// The vectors depend on the Unicode tables of the Go release and of golang.org/x/text, which
// only change for newly assigned characters. Any deliberate change to the algorithm must change
// [Builtin.Name]; a golden test guards against accidental ones.
//
// # The OpenAI-compatible provider
//
// See [OpenAIConfig] for the defaults: batches of 96 texts, at most 4 requests in flight per
// provider, 30s per request, 5 retries with backoff from 500ms to 30s. Errors wrap one of the
// sentinels [ErrRateLimited], [ErrUnavailable] (both transient, see [IsTransient]),
// [ErrProvider], [ErrBadResponse] or [ErrDimensionMismatch] (permanent), or are the caller's
// context error. A queue worker can therefore retry a job later exactly when IsTransient reports
// true, and fail it otherwise.
package embed
