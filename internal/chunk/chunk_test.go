package chunk

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// sampleDocs returns a document of a few thousand tokens for every document type.
func sampleDocs() map[string]string {
	text := prose(11, 2500)
	var md strings.Builder
	for i, h := range []string{"Intro", "Setup", "Usage", "Internals"} {
		fmt.Fprintf(&md, "# %s\n\n%s\n\n## Details %d\n\n%s\n\n", h, prose(uint64(20+i), 300), i, prose(uint64(30+i), 500))
	}
	var chat strings.Builder
	for i := range 300 {
		fmt.Fprintf(&chat, "[12:%02d] %s: %s\n", i%60, []string{"alice", "bob", "carol"}[i%3], prose(uint64(100+i), 5+i%20))
	}
	var code strings.Builder
	for i := range 200 {
		fmt.Fprintf(&code, "// fn%d does things.\nfunc fn%d(a, b int) int {\n\tif a > b {\n\t\treturn a - b\n\t}\n\treturn a + b*%d\n}\n\n", i, i, i)
	}
	email := "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: Quarterly report\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\n" +
		"Hi Bob,\n\n" + prose(12, 600) + "\n\nBest regards,\nAlice\n\n" +
		"On Sun, Dec 31, 2023 at 9:00 AM Bob <bob@example.com> wrote:\n> " + strings.ReplaceAll(prose(13, 300), "\n", "\n> ") + "\n"
	docs := map[string]string{}
	for _, typ := range DocumentTypes() {
		docs[typ] = text
	}
	docs["markdown"] = md.String()
	docs["chat"] = chat.String()
	docs["code"] = code.String()
	docs["email"] = email
	docs["html"] = "<html><body>\n<p>" + strings.ReplaceAll(text, "\n\n", "</p>\n<p>") + "</p>\n</body></html>"
	return docs
}

func TestSplitEveryDocumentType(t *testing.T) {
	t.Parallel()
	for typ, doc := range sampleDocs() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			// given a document of several parent windows, when it is split with the defaults
			chunks, err := Split(typ, doc, Options{})
			require.NoError(t, err)
			// expect valid chunks within the type's default sizes, with several parents that have
			// children
			d, err := DefaultOptions(typ)
			require.NoError(t, err)
			requireValid(t, doc, d.ParentSize, d.ChildSize, chunks)
			withChildren := 0
			for _, p := range topLevel(chunks) {
				if p.Level == 1 {
					withChildren++
				}
			}
			require.Greater(t, withChildren, 1)
			// and windows that use most of their budget: the parents average more than half of it
			total, n := 0, 0
			for _, p := range topLevel(chunks) {
				if p.Level == 1 {
					total += p.Tokens
					n++
				}
			}
			require.Greater(t, total/n, d.ParentSize/2, "average parent size")
		})
	}
}

func TestSplitShortDocumentIsOneChunk(t *testing.T) {
	t.Parallel()
	type testCase struct {
		docType string
		given   string
		expect  map[string]any // metadata of the single chunk
	}
	tests := []testCase{
		{docType: "text", given: "  Just one sentence.\n", expect: map[string]any{}},
		{docType: "markdown", given: "# Title\n\nShort body.", expect: map[string]any{"section": "Title"}},
		{docType: "code", given: "func main() {}\n", expect: map[string]any{}},
		{docType: "chat", given: "alice: hi", expect: map[string]any{"speakers": []string{"alice"}, "message_count": 1}},
		{docType: "email", given: "Can we meet tomorrow?", expect: map[string]any{"email_part": "body"}},
		{docType: "unknown", given: "x", expect: map[string]any{}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.docType] = true
	}
	for _, typ := range DocumentTypes() {
		if !covered[typ] {
			// a paragraph that fits in one child window of every type
			tests = append(tests, testCase{docType: typ, given: prose(5, 40), expect: map[string]any{}})
		}
	}
	for _, tt := range tests {
		t.Run(tt.docType, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split(tt.docType, tt.given, Options{})
			require.NoError(t, err)
			require.Len(t, chunks, 1)
			c := chunks[0]
			require.Equal(t, strings.TrimSpace(tt.given), c.Content)
			require.Equal(t, 0, c.Index)
			require.Equal(t, 0, c.Level)
			require.Equal(t, -1, c.ParentIndex)
			require.Equal(t, tt.expect, c.Metadata)
		})
	}
}

func TestSplitOptions(t *testing.T) {
	t.Parallel()
	doc := prose(21, 3000)
	tests := []struct {
		name         string
		given        Options
		expectSizes  [2]int // resolved parent and child size
		expectParent int    // parents at least
	}{
		{name: "defaults", given: Options{}, expectSizes: [2]int{600, 300}, expectParent: 5},
		{name: "smaller parent, derived child", given: Options{ParentSize: 200}, expectSizes: [2]int{200, 100}, expectParent: 18},
		{name: "both sizes", given: Options{ParentSize: 120, ChildSize: 40}, expectSizes: [2]int{120, 40}, expectParent: 30},
		{name: "minimum sizes", given: Options{ParentSize: 16, ChildSize: 16, ParentOverlap: 7, ChildOverlap: 7}, expectSizes: [2]int{16, 16}, expectParent: 300},
		{name: "large", given: Options{ParentSize: 4000, ChildSize: 1000}, expectSizes: [2]int{4000, 1000}, expectParent: 1},
	}
	prevParents := 0
	for _, tt := range tests {
		// given caller-supplied sizes, when splitting
		chunks, err := Split("text", doc, tt.given)
		require.NoError(t, err, tt.name)
		// expect them honoured
		requireValid(t, doc, tt.expectSizes[0], tt.expectSizes[1], chunks)
		parents := len(topLevel(chunks))
		require.GreaterOrEqual(t, parents, tt.expectParent, tt.name)
		if tt.name == "smaller parent, derived child" || tt.name == "both sizes" || tt.name == "minimum sizes" {
			require.Greater(t, parents, prevParents, "%s: smaller windows give more chunks", tt.name)
		}
		prevParents = parents
	}
}

func TestSplitOverlap(t *testing.T) {
	t.Parallel()
	doc := prose(31, 3000)
	tests := []struct {
		name   string
		given  Options
		expect func(t *testing.T, prev, next Chunk, overlapTokens int)
	}{
		{
			name:  "default overlap: consecutive windows share text",
			given: Options{},
			expect: func(t *testing.T, prev, next Chunk, overlapTokens int) {
				require.Less(t, next.Start, prev.End)
				require.Equal(t, prev.Content[next.Start-prev.Start:], next.Content[:prev.End-next.Start])
				require.Positive(t, overlapTokens)
			},
		},
		{
			name:  "large overlap",
			given: Options{ParentSize: 300, ParentOverlap: 120, ChildSize: 100, ChildOverlap: 40},
			expect: func(t *testing.T, prev, next Chunk, overlapTokens int) {
				require.Less(t, next.Start, prev.End)
				require.Greater(t, overlapTokens, 20)
			},
		},
		{
			name:  "NoOverlap: windows only touch",
			given: Options{ParentOverlap: NoOverlap, ChildOverlap: NoOverlap},
			expect: func(t *testing.T, prev, next Chunk, _ int) {
				require.GreaterOrEqual(t, next.Start, prev.End)
				require.Empty(t, strings.TrimSpace(doc[prev.End:next.Start]))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split("text", doc, tt.given)
			require.NoError(t, err)
			parents := topLevel(chunks)
			require.Greater(t, len(parents), 2)
			for i := 1; i < len(parents); i++ {
				prev, next := parents[i-1], parents[i]
				tt.expect(t, prev, next, CountTokens(doc[next.Start:max(next.Start, prev.End)]))
			}
			for _, p := range parents {
				kids := children(chunks, p.Index)
				for i := 1; i < len(kids); i++ {
					tt.expect(t, kids[i-1], kids[i], CountTokens(doc[kids[i].Start:max(kids[i].Start, kids[i-1].End)]))
				}
			}
		})
	}
}

func TestSplitCutsAtSentenceEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		docType string
		given   string
		expect  func(t *testing.T, c Chunk)
	}{
		{
			name:    "prose ends windows at a sentence end",
			docType: "text",
			given:   prose(41, 4000),
			expect: func(t *testing.T, c Chunk) {
				require.True(t, strings.HasSuffix(c.Content, "."), "ends mid-sentence: …%q", c.Content[max(0, len(c.Content)-30):])
				require.True(t, unicode.IsUpper(rune(c.Content[0])), "starts mid-sentence: %q…", c.Content[:30])
			},
		},
		{
			name:    "code ends windows at a line end",
			docType: "code",
			given:   sampleDocs()["code"],
			expect: func(t *testing.T, c Chunk) {
				doc := sampleDocs()["code"]
				require.True(t, c.End == len(doc) || doc[c.End] == '\n', "ends mid-line at %d", c.End)
				require.True(t, c.Start == 0 || doc[c.Start-1] == '\n' || doc[c.Start-1] == '\t', "starts mid-line at %d", c.Start)
			},
		},
		{
			name:    "without sentences, at a clause",
			docType: "text",
			given:   strings.Repeat("alpha beta gamma delta, ", 400),
			expect: func(t *testing.T, c Chunk) {
				require.True(t, strings.HasSuffix(c.Content, ","), "got …%q", c.Content[max(0, len(c.Content)-30):])
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split(tt.docType, tt.given, Options{})
			require.NoError(t, err)
			require.Greater(t, len(chunks), 3)
			for _, c := range chunks {
				tt.expect(t, c)
			}
		})
	}
}

func TestSplitTextWithoutBreaks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
	}{
		{name: "one huge word", given: strings.Repeat("a", 200_000)},
		{name: "base64-like", given: strings.Repeat("QUJDRGVmZ2hpams0NTY3ODk=", 5000)},
		{name: "CJK without spaces", given: strings.Repeat("日本語の文章です", 5000)},
		{name: "punctuation", given: strings.Repeat("-=", 50_000)},
		{name: "emoji", given: strings.Repeat("😀", 20_000)},
		{name: "whitespace heavy", given: "a" + strings.Repeat(" \t\n", 30_000) + "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// given text that no sentence or word boundary can cut, when splitting
			chunks, err := Split("text", tt.given, Options{})
			require.NoError(t, err)
			// expect it cut anyway, within the window sizes
			requireValid(t, tt.given, 600, 300, chunks)
		})
	}
}

func TestSplitMarkdown(t *testing.T) {
	t.Parallel()
	big := prose(51, 1500)
	doc := "Preamble before any heading.\n\n" +
		"# Intro\n\nWelcome text.\n\n" +
		"## Setup\n\nInstall it.\n\n```sh\n# not a heading\nmake install\n```\n\n" +
		"### Deep ###\n\nDeep text.\n\n" +
		"# Usage\n## Basics\n\nBasics text.\n\n" +
		"## Large\n\n" + big + "\n\n" +
		"# Empty\n"
	chunks, err := Split("markdown", doc, Options{})
	require.NoError(t, err)
	requireValid(t, doc, 600, 300, chunks)

	type section struct {
		path   string
		prefix string
	}
	var got []section
	for _, c := range topLevel(chunks) {
		path, _ := c.Metadata["section"].(string)
		got = append(got, section{path: path, prefix: c.Content[:min(len(c.Content), 12)]})
	}
	expect := []section{
		{path: "", prefix: "Preamble bef"},
		{path: "Intro", prefix: "# Intro\n\nWel"},
		{path: "Intro > Setup", prefix: "## Setup\n\nIn"},
		{path: "Intro > Setup > Deep", prefix: "### Deep ###"},
		{path: "Usage > Basics", prefix: "# Usage\n## B"}, // a lone heading joins its first subsection
	}
	require.Equal(t, expect, got[:len(expect)])
	// the large section is windowed, every window labelled
	large := 0
	for _, s := range got[len(expect):] {
		if s.path == "Usage > Large" {
			large++
		}
	}
	require.Greater(t, large, 2)
	require.Equal(t, section{path: "Empty", prefix: "# Empty"}, got[len(got)-1])
	// children carry their parent's section
	for _, c := range chunks {
		if c.ParentIndex >= 0 {
			require.Equal(t, chunks[c.ParentIndex].Metadata["section"], c.Metadata["section"])
		}
	}
	// the code fence kept its comment line
	for _, c := range chunks {
		if strings.Contains(c.Content, "# not a heading") {
			require.Equal(t, "Intro > Setup", c.Metadata["section"])
		}
	}
}

func TestSplitChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		given          string
		expectSpeakers []string // union over all chunks
		expectMessages []string // each must appear whole in some leaf
	}{
		{
			name: "bracketed timestamps, system lines and continuation lines",
			given: "[12:03] alice: hi\n[12:04] bob: hello there\ncontinued on a second line\n" +
				"*** carol joined ***\n[12:05] carol: hey all\n",
			expectSpeakers: []string{"alice", "bob", "system", "carol"},
			expectMessages: []string{"[12:03] alice: hi", "[12:04] bob: hello there\ncontinued on a second line", "*** carol joined ***", "[12:05] carol: hey all"},
		},
		{
			name:           "plain names, IRC names, full names",
			given:          "alice: one\n<bob> two\nCarol Smith: three\n12:03 PM dave: four\n",
			expectSpeakers: []string{"alice", "bob", "Carol Smith", "dave"},
			expectMessages: []string{"alice: one", "<bob> two", "Carol Smith: three", "12:03 PM dave: four"},
		},
		{
			name:           "lines before the first message",
			given:          "Transcript of the call\n\nalice: hi\nbob: bye",
			expectSpeakers: []string{"alice", "bob"},
			expectMessages: []string{"Transcript of the call", "alice: hi", "bob: bye"},
		},
	}
	long := &strings.Builder{}
	var msgs []string
	for i := range 400 {
		m := fmt.Sprintf("[10:%02d] user%d: %s", i%60, i%7, prose(uint64(i), 3+i%25))
		if i%50 == 0 {
			m = fmt.Sprintf("[10:%02d] user%d: %s", i%60, i%7, prose(uint64(i), 400)) // larger than a parent
		}
		msgs = append(msgs, m)
		long.WriteString(m + "\n")
	}
	tests = append(tests, struct {
		name           string
		given          string
		expectSpeakers []string
		expectMessages []string
	}{name: "long transcript", given: long.String(), expectSpeakers: []string{"user0", "user1", "user2", "user3", "user4", "user5", "user6"}, expectMessages: msgs})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split("chat", tt.given, Options{})
			require.NoError(t, err)
			requireValid(t, tt.given, 200, 100, chunks)
			var speakers []string
			for _, c := range chunks {
				s, _ := c.Metadata["speakers"].([]string)
				for _, name := range s {
					if !strings.Contains(strings.Join(speakers, "\x00")+"\x00", name+"\x00") {
						speakers = append(speakers, name)
					}
				}
				require.Positive(t, c.Metadata["message_count"])
			}
			require.ElementsMatch(t, tt.expectSpeakers, speakers)
			leafs := leaves(chunks)
			for _, m := range tt.expectMessages {
				if CountTokens(m) > 100 {
					continue // windowed; coverage is checked by requireValid
				}
				found := false
				for _, c := range leafs {
					found = found || strings.Contains(c.Content, m)
				}
				require.True(t, found, "message %q is in no leaf", m)
			}
		})
	}

	t.Run("messages are packed whole", func(t *testing.T) {
		t.Parallel()
		doc := long.String()
		chunks, err := Split("chat", doc, Options{})
		require.NoError(t, err)
		// every leaf starts at a message, unless it starts inside a message too large for one child
		var starts []int
		offset := 0
		for _, m := range msgs {
			starts = append(starts, offset)
			offset += len(m) + 1
		}
		for _, c := range leaves(chunks) {
			k, exact := slices.BinarySearch(starts, c.Start)
			if exact {
				continue
			}
			require.Greater(t, CountTokens(msgs[k-1]), 100, "leaf at %d starts inside a small message", c.Start)
		}
	})
}

func TestSplitEmail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		given  string
		expect []string // email_part of the top-level chunks, in order
	}{
		{
			name: "headers, body, signature, quoted reply",
			given: "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nCc: Carol\nSubject: Lunch\n" +
				"Date: Mon, 1 Jan 2024 10:00:00 +0000\n\nHi Bob,\n\nAre we still on for lunch?\n\n" +
				"Best regards,\nAlice\n\nOn Sun, Dec 31, 2023 at 9:00 AM Bob <bob@example.com> wrote:\n> Lunch on Monday?\n> Bob\n",
			expect: []string{"headers", "body", "signature", "quoted"},
		},
		{
			name:   "signature delimiter and wrapped reply header without '>'",
			given:  "Subject: Re: plan\n\nSounds good.\n\n-- \nBob Builder\nACME Inc.\n\nOn Sun, Dec 31, 2023 at 9:00 AM Alice Long-Name\n<alice@example.com> wrote:\nThe plan is attached.\n",
			expect: []string{"headers", "body", "signature", "quoted"},
		},
		{
			name:   "inline replies between quoted blocks",
			given:  "> first question?\nFirst answer.\n\n> second question?\nSecond answer.\n\nThanks,\nBob",
			expect: []string{"quoted", "body", "quoted", "body", "signature"},
		},
		{
			name:   "Outlook original message",
			given:  "Please see below.\n\n-----Original Message-----\nFrom: Carol\nSent: Monday\nSubject: Numbers\n\nThe numbers are in.",
			expect: []string{"body", "quoted"},
		},
		{
			name:   "a closing phrase early in a long body is body text",
			given:  "Hi,\n\nThanks!\n\nOne.\nTwo.\nThree.\nFour.\nFive.\nSix.\nSeven.\nEight.\n\nCheers,\nDan",
			expect: []string{"body", "signature"},
		},
		{
			name:   "sent from my phone",
			given:  "On my way.\n\nSent from my iPhone",
			expect: []string{"body", "signature"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split("email", tt.given, Options{})
			require.NoError(t, err)
			requireValid(t, tt.given, 300, 150, chunks)
			var got []string
			for _, c := range topLevel(chunks) {
				got = append(got, c.Metadata["email_part"].(string))
			}
			require.Equal(t, tt.expect, got)
		})
	}

	t.Run("every part of a long email is chunked", func(t *testing.T) {
		t.Parallel()
		doc := sampleDocs()["email"]
		chunks, err := Split("email", doc, Options{})
		require.NoError(t, err)
		parts := map[string]int{}
		for _, c := range chunks {
			parts[c.Metadata["email_part"].(string)]++
		}
		require.Equal(t, 1, parts["headers"])
		require.Equal(t, 1, parts["signature"])
		require.Greater(t, parts["body"], 3)
		require.Greater(t, parts["quoted"], 1)
		for _, c := range chunks {
			if c.Metadata["email_part"] == "headers" {
				require.True(t, strings.HasPrefix(c.Content, "From: Alice"))
				require.True(t, strings.HasSuffix(c.Content, "+0000"))
			}
			if c.Metadata["email_part"] == "signature" {
				require.Equal(t, "Best regards,\nAlice", c.Content)
			}
		}
	})
}

func TestSplitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		docType     string
		content     string
		opts        Options
		expectField string
	}{
		{name: "unknown type", docType: "spreadsheet", content: "x", expectField: "document_type"},
		{name: "type is case-sensitive", docType: "Text", content: "x", expectField: "document_type"},
		{name: "empty type", docType: "", content: "x", expectField: "document_type"},
		{name: "empty content", docType: "text", content: "", expectField: "content"},
		{name: "blank content", docType: "chat", content: " \n\t\u00a0 ", expectField: "content"},
		{name: "negative parent size", docType: "text", content: "x", opts: Options{ParentSize: -1}, expectField: "parent_size"},
		{name: "negative child size", docType: "text", content: "x", opts: Options{ChildSize: -5}, expectField: "child_size"},
		{name: "parent too small", docType: "text", content: "x", opts: Options{ParentSize: 15}, expectField: "parent_size"},
		{name: "parent too large", docType: "text", content: "x", opts: Options{ParentSize: 8193}, expectField: "parent_size"},
		{name: "child too small", docType: "text", content: "x", opts: Options{ChildSize: 10}, expectField: "child_size"},
		{name: "child larger than parent", docType: "text", content: "x", opts: Options{ParentSize: 100, ChildSize: 200}, expectField: "child_size"},
		{name: "child larger than default parent", docType: "chat", content: "x", opts: Options{ChildSize: 300}, expectField: "child_size"},
		{name: "parent overlap half the size", docType: "text", content: "x", opts: Options{ParentOverlap: 300}, expectField: "parent_overlap"},
		{name: "child overlap too large", docType: "email", content: "x", opts: Options{ChildOverlap: 75}, expectField: "child_overlap"},
		{name: "overlap below NoOverlap", docType: "text", content: "x", opts: Options{ChildOverlap: -2}, expectField: "child_overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			chunks, err := Split(tt.docType, tt.content, tt.opts)
			require.Nil(t, chunks)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tt.expectField, fe.Field)
			require.NotEmpty(t, fe.Message)
			require.ErrorIs(t, err, ErrInvalid)
			require.True(t, strings.HasPrefix(err.Error(), tt.expectField+": "), err.Error())
		})
	}
}

func TestDefaultOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given  []string
		expect Options
	}{
		{given: []string{"text", "markdown", "html", "report", "business_report", "unknown"}, expect: Options{600, 300, 50, 25}},
		{given: []string{"code", "technical_doc", "pdf"}, expect: Options{800, 400, 60, 30}},
		{given: []string{"chat"}, expect: Options{200, 100, 20, 10}},
		{given: []string{"email"}, expect: Options{300, 150, 25, 15}},
		{given: []string{"legal_document"}, expect: Options{500, 250, 40, 20}},
		{given: []string{"presentation"}, expect: Options{400, 200, 30, 15}},
		{given: []string{"docx"}, expect: Options{700, 350, 50, 25}},
	}
	var all []string
	for _, tt := range tests {
		for _, typ := range tt.given {
			got, err := DefaultOptions(typ)
			require.NoError(t, err, typ)
			require.Equal(t, tt.expect, got, typ)
			resolved, err := Options{}.resolve(typ)
			require.NoError(t, err, typ)
			require.Equal(t, tt.expect, resolved, "zero options resolve to the defaults of %s", typ)
			all = append(all, typ)
		}
	}
	require.ElementsMatch(t, all, DocumentTypes())
	require.IsIncreasing(t, DocumentTypes())

	_, err := DefaultOptions("nope")
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "document_type", fe.Field)

	types := DocumentTypes()
	types[0] = "changed"
	require.NotEqual(t, "changed", DocumentTypes()[0], "the caller owns the returned slice")
}

func TestOptionsResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		docType string
		given   Options
		expect  Options
	}{
		{name: "zero takes the defaults", docType: "code", given: Options{}, expect: Options{800, 400, 60, 30}},
		{name: "a set parent scales child and overlaps", docType: "text", given: Options{ParentSize: 1200}, expect: Options{1200, 600, 100, 50}},
		{name: "a small parent keeps the child at the minimum", docType: "text", given: Options{ParentSize: 20}, expect: Options{20, 16, 1, 1}},
		{name: "a set child scales its overlap", docType: "text", given: Options{ChildSize: 100}, expect: Options{600, 100, 50, 8}},
		{name: "explicit values win", docType: "chat", given: Options{400, 150, 30, 20}, expect: Options{400, 150, 30, 20}},
		{name: "NoOverlap", docType: "email", given: Options{ParentOverlap: NoOverlap, ChildOverlap: NoOverlap}, expect: Options{300, 150, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.given.resolve(tt.docType)
			require.NoError(t, err)
			require.Equal(t, tt.expect, got)
		})
	}
}

func TestSplitHashes(t *testing.T) {
	t.Parallel()
	// given a document that repeats a paragraph, when split into small windows
	para := "This paragraph repeats word for word, so two chunks end up with the same text.\n\n"
	doc := strings.Repeat(para, 40)
	chunks, err := Split("text", doc, Options{ParentSize: 40, ChildSize: 20, ParentOverlap: NoOverlap, ChildOverlap: NoOverlap})
	require.NoError(t, err)
	// expect every chunk kept, with equal hashes exactly for equal content
	requireValid(t, doc, 40, 20, chunks)
	hashes := map[string]int{}
	for _, c := range chunks {
		hashes[c.ContentHash]++
	}
	require.Less(t, len(hashes), len(chunks), "repeated text gives repeated hashes")
	require.Greater(t, len(chunks), 40)
}

func TestSplitOffsetsWithCRLFAndUnicode(t *testing.T) {
	t.Parallel()
	doc := strings.ReplaceAll(prose(61, 1500), "\n", "\r\n") + "\r\n\r\nÜbergrößenträger — “quoted” café. 日本語の文章です。次の文。\u00a0\u2003End."
	for _, typ := range []string{"text", "markdown", "email", "chat", "code"} {
		chunks, err := Split(typ, doc, Options{ParentSize: 100, ChildSize: 40})
		require.NoError(t, err, typ)
		requireValid(t, doc, 100, 40, chunks)
	}
}

// TestSplitLargeDocument checks the invariants on a 10 MB document; its speed is measured by
// BenchmarkSplit, not asserted here.
func TestSplitLargeDocument(t *testing.T) {
	t.Parallel()
	doc := prose(71, 2_000_000) // about 10 MB
	require.Greater(t, len(doc), 10_000_000)
	chunks, err := Split("text", doc, Options{})
	require.NoError(t, err)
	requireValid(t, doc, 600, 300, chunks)
}

func TestSplitIsConcurrencySafe(t *testing.T) {
	t.Parallel()
	docs := sampleDocs()
	errs := make(chan error, len(docs))
	for typ, doc := range docs {
		go func() {
			_, err := Split(typ, doc, Options{})
			errs <- err
		}()
	}
	for range docs {
		require.NoError(t, <-errs)
	}
}
