package chunk

import "strings"

// line is one line of the document: text is doc[start:end] without the line break, and next is the
// offset of the following line.
type line struct {
	start, end, next int
}

// splitLines returns the lines of s. A trailing "\r" is not part of a line's text.
func splitLines(s string) []line {
	lines := make([]line, 0, strings.Count(s, "\n")+1)
	for start := 0; start < len(s); {
		next := len(s)
		end := len(s)
		if i := strings.IndexByte(s[start:], '\n'); i >= 0 {
			end = start + i
			next = end + 1
		}
		if end > start && s[end-1] == '\r' {
			end--
		}
		lines = append(lines, line{start: start, end: end, next: next})
		start = next
	}
	return lines
}

// isBlank reports whether s holds only whitespace.
func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

// heading is an ATX heading line of a markdown document.
type heading struct {
	start   int // offset of the heading line
	bodyAt  int // offset of the line after it
	level   int
	section string // the heading path, "Intro > Setup"
}

// markdownSections divides a markdown document at its ATX headings ("# Title" to "###### Title",
// outside fenced code blocks). Each section runs from its heading line to the next heading and carries
// its heading path in "section". Text before the first heading is a section without that key. A
// heading directly followed by a deeper heading joins that heading's section, so that no chunk holds a
// lone heading line. Setext headings (underlined with === or ---) are not recognised.
func markdownSections(doc string) []segment {
	var (
		heads     []heading
		path      [7]string
		fenceChar byte
		fenceLen  int
		inFence   bool
		pathParts []string
	)
	for _, l := range splitLines(doc) {
		text := doc[l.start:l.end]
		if ch, n := fence(text); n > 0 {
			switch {
			case !inFence:
				inFence, fenceChar, fenceLen = true, ch, n
			case ch == fenceChar && n >= fenceLen && isBlank(strings.TrimLeft(strings.TrimSpace(text), string(ch))):
				inFence = false
			}
			continue
		}
		if inFence {
			continue
		}
		level, title, ok := atxHeading(text)
		if !ok {
			continue
		}
		path[level] = title
		clear(path[level+1:])
		pathParts = pathParts[:0]
		for _, p := range path[1 : level+1] {
			if p != "" {
				pathParts = append(pathParts, p)
			}
		}
		heads = append(heads, heading{start: l.start, bodyAt: l.next, level: level, section: strings.Join(pathParts, " > ")})
	}

	if len(heads) == 0 {
		return []segment{{end: len(doc)}}
	}
	var segs []segment
	if !isBlank(doc[:heads[0].start]) {
		segs = append(segs, segment{end: heads[0].start})
	}
	pending := -1
	for k, h := range heads {
		start, end := h.start, len(doc)
		if pending >= 0 {
			start, pending = pending, -1
		}
		if k+1 < len(heads) {
			end = heads[k+1].start
			if isBlank(doc[h.bodyAt:end]) && heads[k+1].level > h.level {
				pending = start
				continue
			}
		}
		meta := map[string]any{}
		if h.section != "" {
			meta["section"] = h.section
		}
		segs = append(segs, segment{start: start, end: end, meta: meta})
	}
	return segs
}

// atxHeading parses an ATX heading line: up to three spaces, one to six '#', then a space, a tab or
// the end of the line. The optional closing sequence of '#' is dropped from the title.
func atxHeading(text string) (int, string, bool) {
	i := 0
	for i < len(text) && i < 3 && text[i] == ' ' {
		i++
	}
	j := i
	for j < len(text) && text[j] == '#' {
		j++
	}
	level := j - i
	if level < 1 || level > 6 || (j < len(text) && text[j] != ' ' && text[j] != '\t') {
		return 0, "", false
	}
	title := strings.TrimSpace(text[j:])
	if t := strings.TrimRight(title, "#"); t != title && (t == "" || t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
		title = strings.TrimSpace(t)
	}
	return level, title, true
}

// fence returns the character and length of a code fence line (``` or ~~~, indented at most three
// spaces), or a zero length.
func fence(text string) (byte, int) {
	i := 0
	for i < len(text) && i < 3 && text[i] == ' ' {
		i++
	}
	if i >= len(text) || (text[i] != '`' && text[i] != '~') {
		return 0, 0
	}
	ch, j := text[i], i
	for j < len(text) && text[j] == ch {
		j++
	}
	if j-i < 3 {
		return 0, 0
	}
	return ch, j - i
}
