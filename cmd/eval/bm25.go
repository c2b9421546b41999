package main

import (
	"math"
	"sort"
	"strings"
	"unicode"
)

// stopWords is a small English stop list for the reference BM25 (the PostgreSQL english
// configuration has its own).
var stopWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`a an and are as at be but by for from has have if in into is it its
		of on or that the their then there these they this to was were which will with not no can`) {
		m[w] = true
	}
	return m
}()

func tokens(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		if !stopWords[f] {
			out = append(out, f)
		}
	}
	return out
}

// bm25Index is a plain Okapi BM25 (k1 1.2, b 0.75, Lucene's IDF) over whole documents with a
// lower-casing, stop-word tokenizer and no stemming: the reference the issue measured against.
type bm25Index struct {
	ids   []string
	tf    []map[string]int
	dl    []int
	df    map[string]int
	avgdl float64
}

func newBM25(items []item) *bm25Index {
	x := &bm25Index{df: map[string]int{}}
	total := 0
	for _, it := range items {
		m := map[string]int{}
		toks := tokens(it.Content)
		for _, t := range toks {
			m[t]++
		}
		for t := range m {
			x.df[t]++
		}
		x.ids = append(x.ids, it.ID)
		x.tf = append(x.tf, m)
		x.dl = append(x.dl, len(toks))
		total += len(toks)
	}
	x.avgdl = float64(total) / float64(max(len(items), 1))
	return x
}

func (x *bm25Index) search(q string, k int) []string {
	n := float64(len(x.ids))
	seen := map[string]bool{}
	scores := make([]float64, len(x.ids))
	for _, t := range tokens(q) {
		if seen[t] || x.df[t] == 0 {
			continue
		}
		seen[t] = true
		df := float64(x.df[t])
		idf := math.Log(1 + (n-df+0.5)/(df+0.5))
		for i, m := range x.tf {
			if f := float64(m[t]); f > 0 {
				scores[i] += idf * f * 2.2 / (f + 1.2*(0.25+0.75*float64(x.dl[i])/x.avgdl))
			}
		}
	}
	idx := make([]int, 0, len(x.ids))
	for i, s := range scores {
		if s > 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool {
		if scores[idx[a]] != scores[idx[b]] {
			return scores[idx[a]] > scores[idx[b]]
		}
		return x.ids[idx[a]] < x.ids[idx[b]]
	})
	out := make([]string, 0, k)
	for _, i := range idx[:min(k, len(idx))] {
		out = append(out, x.ids[i])
	}
	return out
}

// metrics accumulates MRR@10, recall@10 (the target in the top 10) and nDCG@10 of known-item
// queries (one relevant document each).
type metrics struct {
	n                 int
	mrr, recall, ndcg float64
}

func (m *metrics) add(ranked []string, target string) {
	m.n++
	for i, id := range ranked[:min(10, len(ranked))] {
		if id == target {
			m.mrr += 1 / float64(i+1)
			m.recall++
			m.ndcg += 1 / math.Log2(float64(i+2))
			return
		}
	}
}

func (m metrics) row() (float64, float64, float64) {
	if m.n == 0 {
		return 0, 0, 0
	}
	return m.mrr / float64(m.n), m.recall / float64(m.n), m.ndcg / float64(m.n)
}
