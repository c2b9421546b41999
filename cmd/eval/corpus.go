package main

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/build"
	"go/doc"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// item is one document of a query set with the query that should find it (known-item search).
type item struct {
	ID      string // the document's name; results are matched on it
	Content string
	Query   string
}

// querySet is one evaluation set.
type querySet struct {
	Name  string
	Items []item
}

// maxContent keeps documents of a few chunks: the sets measure ranking, not ingest.
const maxContent = 6000

// goStdSet: one document per package of the Go standard library found in GOROOT/src (no
// internal, vendor or cmd packages): its package comment without the first sentence, then its
// exported declarations with their doc comments. The query is the first sentence (the synopsis
// that `go list` shows) without "Package <name>".
func goStdSet(ctx context.Context) (querySet, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return querySet{}, fmt.Errorf("go env GOROOT: %w", err)
	}
	root := filepath.Join(strings.TrimSpace(string(out)), "src")
	var dirs []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		base := d.Name()
		if base == "testdata" || base == "internal" || base == "vendor" || strings.HasPrefix(rel, "cmd") {
			return filepath.SkipDir
		}
		dirs = append(dirs, path)
		return nil
	})
	if err != nil {
		return querySet{}, err
	}
	set := querySet{Name: "go-std"}
	seen := map[string]bool{}
	for _, dir := range dirs {
		it, ok := goPackage(root, dir)
		if !ok || seen[it.Query] {
			continue
		}
		seen[it.Query] = true
		set.Items = append(set.Items, it)
	}
	sort.Slice(set.Items, func(i, j int) bool { return set.Items[i].ID < set.Items[j].ID })
	return set, nil
}

func goPackage(root, dir string) (item, bool) {
	bp, err := build.ImportDir(dir, build.ImportComment)
	if err != nil || bp.Name == "main" || len(bp.GoFiles) == 0 {
		return item{}, false
	}
	name := bp.Name
	fset := token.NewFileSet()
	var files []*ast.File
	for _, f := range bp.GoFiles {
		af, err := parser.ParseFile(fset, filepath.Join(dir, f), nil, parser.ParseComments)
		if err != nil {
			return item{}, false
		}
		files = append(files, af)
	}
	rel, _ := filepath.Rel(root, dir)
	p, err := doc.NewFromFiles(fset, files, filepath.ToSlash(rel))
	if err != nil || p.Doc == "" {
		return item{}, false
	}
	synopsis := p.Synopsis(p.Doc)
	query := strings.TrimSpace(strings.TrimPrefix(synopsis, "Package "+name))
	if len(strings.Fields(query)) < 4 {
		return item{}, false
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace(strings.TrimPrefix(p.Doc, synopsis)))
	add := func(n, d string) {
		if d != "" && b.Len() < maxContent {
			fmt.Fprintf(&b, "\n\n%s: %s", n, strings.TrimSpace(d))
		}
	}
	for _, f := range p.Funcs {
		add(f.Name, f.Doc)
	}
	for _, t := range p.Types {
		add(t.Name, t.Doc)
		for _, f := range t.Funcs {
			add(f.Name, f.Doc)
		}
		for _, m := range t.Methods {
			add(t.Name+"."+m.Name, m.Doc)
		}
	}
	content := b.String()
	if len(content) > maxContent {
		content = content[:strings.LastIndexAny(content[:maxContent], " \n")]
	}
	if len(strings.Fields(content)) < 20 {
		return item{}, false
	}
	return item{ID: filepath.ToSlash(rel), Content: content, Query: query}, true
}

// debianSet: one document per installed Debian package: its long description (what
// `apt show` prints under the first line). The query is the short description (the first line).
// Packages whose long or short description repeats another's are left out (e.g. -dev and -doc
// packages sharing one text), so every query has one right answer.
func debianSet(ctx context.Context) (querySet, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Package}\x1f${Description}\x1e").Output()
	if err != nil {
		return querySet{}, fmt.Errorf("dpkg-query: %w", err)
	}
	set := querySet{Name: "debian"}
	countShort, countLong := map[string]int{}, map[string]int{}
	type pkg struct{ name, short, long string }
	var pkgs []pkg
	for _, rec := range bytes.Split(out, []byte{0x1e}) {
		name, desc, ok := strings.Cut(string(rec), "\x1f")
		if !ok {
			continue
		}
		short, long, _ := strings.Cut(desc, "\n")
		var lines []string
		for _, l := range strings.Split(long, "\n") {
			l = strings.TrimSpace(l)
			if l == "." {
				l = ""
			}
			lines = append(lines, l)
		}
		long = strings.TrimSpace(strings.Join(lines, "\n"))
		short = strings.TrimSpace(short)
		if len(strings.Fields(long)) < 15 || len(strings.Fields(short)) < 2 {
			continue
		}
		countShort[strings.ToLower(short)]++
		countLong[long]++
		pkgs = append(pkgs, pkg{strings.TrimSpace(name), short, long})
	}
	for _, p := range pkgs {
		if countShort[strings.ToLower(p.short)] > 1 || countLong[p.long] > 1 {
			continue
		}
		set.Items = append(set.Items, item{ID: p.name, Content: p.long, Query: p.short})
	}
	sort.Slice(set.Items, func(i, j int) bool { return set.Items[i].ID < set.Items[j].ID })
	if len(set.Items) == 0 {
		return set, fmt.Errorf("no Debian package descriptions found")
	}
	return set, nil
}
