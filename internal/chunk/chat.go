package chunk

import (
	"regexp"
	"slices"
	"strings"
)

// Chat line patterns. A message starts at a line with an optional timestamp ("[12:03]",
// "[2024-01-02 12:03:04]", "(12:03)", "12:03 PM", "2024-01-02 12:03") followed by a speaker
// ("alice:", "Alice Smith:", "<alice>") or a system line ("*** alice joined ***"). A timestamp alone
// also starts a message without a speaker. Any other line continues the current message.
var (
	chatStamp  = regexp.MustCompile(`^(?:\[[^\[\]\n]{1,40}\]|\(\d{1,2}:\d{2}(?::\d{2})?\)|(?:\d{4}-\d{2}-\d{2}[ T])?\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?)(?:\s+|$)`)
	chatAngle  = regexp.MustCompile(`^<([^<>\s]{1,40})>(?:\s|$)`)
	chatColon  = regexp.MustCompile(`^([\p{L}\p{N}_@][\p{L}\p{N}_@.' -]{0,39}?):(?:\s|$)`)
	chatSystem = regexp.MustCompile(`^\*{3}(?:\s|\S.*\*{3}\s*$)`)
)

// systemSpeaker is the speaker of "*** ... ***" lines.
const systemSpeaker = "system"

// maxSpeakerWords bounds a "Name Surname:" speaker, so that "The plan for Monday:" is not a speaker.
const maxSpeakerWords = 3

// message is a span of a chat document with its speaker and message number. Its tokens include the
// line break that separates it from the next message.
type message struct {
	start, end, tokens int
	speaker            string
	id                 int
}

// chatMessages divides a chat transcript into messages that tile the document: each runs from the
// start of its first line to the start of the next message. Lines before the first message form a
// message without a speaker. It returns nil when no line looks like a message.
func chatMessages(doc string) []message {
	var msgs []message
	for _, l := range splitLines(doc) {
		speaker, ok := chatLine(doc[l.start:l.end])
		if !ok {
			continue
		}
		if len(msgs) == 0 && !isBlank(doc[:l.start]) {
			msgs = append(msgs, message{start: 0})
		}
		msgs = append(msgs, message{start: l.start, speaker: speaker})
	}
	for k := range msgs {
		msgs[k].id = k
		msgs[k].end = len(doc)
		if k+1 < len(msgs) {
			msgs[k].end = msgs[k+1].start
		}
	}
	return msgs
}

// chatLine reports whether text starts a message, and its speaker ("" if none).
func chatLine(text string) (string, bool) {
	t := strings.TrimLeft(text, " \t")
	if t == "" {
		return "", false
	}
	// Cheap filter: every pattern starts with one of these bytes or has a colon near the start.
	if c := t[0]; c != '[' && c != '(' && c != '<' && c != '*' && (c < '0' || c > '9') {
		if i := strings.IndexByte(t, ':'); i < 0 || i > 45 {
			return "", false
		}
	}
	stamped := false
	if m := chatStamp.FindStringIndex(head(t, 64)); m != nil {
		t, stamped = t[m[1]:], true
	}
	if chatSystem.MatchString(t) {
		return systemSpeaker, true
	}
	if m := chatAngle.FindStringSubmatch(head(t, 48)); m != nil {
		return m[1], true
	}
	if m := chatColon.FindStringSubmatch(head(t, 48)); m != nil {
		if name := strings.TrimSpace(m[1]); strings.Count(name, " ") < maxSpeakerWords {
			return name, true
		}
	}
	return "", stamped
}

// head returns at most the first n bytes of s (possibly cutting a rune, which the patterns tolerate).
func head(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// splitChat packs whole messages into parents of at most ParentSize tokens and, inside each parent,
// into children of at most ChildSize tokens, with overlaps of whole messages. A message larger than a
// window is windowed like prose. A transcript without recognisable messages is chunked as text.
func (b *builder) splitChat() {
	msgs := chatMessages(b.doc)
	if len(msgs) == 0 {
		b.splitSegments([]segment{{end: len(b.doc)}}, cutProse)
		return
	}
	for k := range msgs {
		msgs[k].tokens = CountTokens(b.doc[msgs[k].start:msgs[k].end])
	}
	parentUnits := b.fitUnits(nil, msgs, b.opts.ParentSize, b.opts.ParentOverlap)
	var childUnits []message
	for _, pg := range b.pack(nil, parentUnits, b.opts.ParentSize, b.opts.ParentOverlap) {
		group := parentUnits[pg.from:pg.to]
		parent := b.add(pg.span, -1, chatMeta(group))
		childUnits = b.fitUnits(childUnits[:0], group, b.opts.ChildSize, b.opts.ChildOverlap)
		for _, cg := range b.pack(nil, childUnits, b.opts.ChildSize, b.opts.ChildOverlap) {
			b.addChild(parent, cg.span, chatMeta(childUnits[cg.from:cg.to]))
		}
	}
}

// fitUnits appends units to dst, replacing every unit larger than size by its windows.
func (b *builder) fitUnits(dst, units []message, size, overlap int) []message {
	for _, u := range units {
		if u.tokens <= size {
			dst = append(dst, u)
			continue
		}
		b.children = b.w.split(b.children[:0], b.doc[u.start:u.end], u.start, size, overlap, cutProse)
		for _, sp := range b.children {
			dst = append(dst, message{start: sp.start, end: sp.end, tokens: sp.tokens, speaker: u.speaker, id: u.id})
		}
	}
	return dst
}

// group is a run units[from:to] of consecutive units and the trimmed span that covers it.
type group struct {
	from, to int
	span     span
}

// pack appends to dst groups of consecutive units of at most size tokens. Consecutive groups share
// their last units up to overlap tokens, as long as the next group still gains a new unit.
func (b *builder) pack(dst []group, units []message, size, overlap int) []group {
	prevTo := 0
	for i := 0; i < len(units); {
		j, tok := i+1, units[i].tokens
		for j < len(units) && tok+units[j].tokens <= size {
			tok += units[j].tokens
			j++
		}
		var sp span
		for {
			sp.start, sp.end = trimSpan(b.doc, units[i].start, units[j-1].end)
			sp.tokens = CountTokens(b.doc[sp.start:sp.end])
			if sp.tokens <= size || j == i+1 {
				break
			}
			j--
		}
		if j <= prevTo { // the overlap left no room for a new unit: start afresh
			i = prevTo
			continue
		}
		if sp.start < sp.end {
			dst = append(dst, group{from: i, to: j, span: sp})
		}
		if j == len(units) {
			break
		}
		prevTo = j
		k, ov := j, 0
		for k-1 > i && ov+units[k-1].tokens <= overlap {
			ov += units[k-1].tokens
			k--
		}
		i = k
	}
	return dst
}

// chatMeta returns the metadata of a chunk made of units: the speakers in order of appearance and the
// number of messages.
func chatMeta(units []message) map[string]any {
	var speakers []string
	count, last := 0, -1
	for _, u := range units {
		if u.id != last {
			count++
			last = u.id
		}
		if u.speaker != "" && !slices.Contains(speakers, u.speaker) {
			speakers = append(speakers, u.speaker)
		}
	}
	m := map[string]any{"message_count": count}
	if len(speakers) > 0 {
		m["speakers"] = speakers
	}
	return m
}
