package chunk

import "strings"

// The values of the "email_part" metadata key.
const (
	partHeaders   = "headers"
	partBody      = "body"
	partQuoted    = "quoted"
	partSignature = "signature"
)

// maxSignatureLines is how many non-blank lines may follow a closing phrase ("Thanks,") for it to
// start a signature; with more, the phrase is part of the body.
const maxSignatureLines = 6

// maxClosingLen is the length of the longest closing phrase with some punctuation.
const maxClosingLen = 24

// emailHeaders are the header names recognised at the top of an email, lower case.
var emailHeaders = []string{
	"from", "to", "cc", "bcc", "subject", "date", "reply-to", "sent",
	"message-id", "in-reply-to", "references",
}

// closings are the lines (lower case, without trailing punctuation) that start a signature.
var closings = map[string]bool{
	"best": true, "best regards": true, "kind regards": true, "warm regards": true, "warmest regards": true,
	"regards": true, "many thanks": true, "thanks": true, "thank you": true, "thanks again": true,
	"thanks so much": true, "thanks in advance": true, "cheers": true, "sincerely": true,
	"yours sincerely": true, "sincerely yours": true, "yours truly": true, "best wishes": true,
	"all the best": true, "respectfully": true, "take care": true, "talk soon": true, "thx": true,
}

// emailParts divides an email into its parts, in document order: the header block at the top
// (From/To/Cc/Bcc/Subject/Date/... lines and their folded continuations), the body, quoted replies
// (from an "On ... wrote:" line, an "-----Original Message-----" or "Forwarded message" marker, or a
// block of lines starting with '>') and the signature (from a "--" line, a closing such as "Best
// regards," near the end, or "Sent from my ..."). Inline replies between quoted blocks become further
// body parts. Every segment carries "email_part".
func emailParts(doc string) []segment {
	lines := splitLines(doc)
	text := func(i int) string { return doc[lines[i].start:lines[i].end] }

	var parts []segment
	open, openStart := "", 0
	emit := func(kind string, endLine int) {
		if open != "" && endLine > openStart {
			start, end := trimSpan(doc, lines[openStart].start, lines[endLine-1].end)
			if start < end {
				parts = append(parts, segment{start: start, end: end, meta: map[string]any{"email_part": open}})
			}
		}
		open, openStart = kind, endLine
	}

	i := 0
	for i < len(lines) && isBlank(text(i)) {
		i++
	}
	headerStart := i
	for i < len(lines) {
		t := text(i)
		if isHeaderLine(t) || (i > headerStart && t != "" && (t[0] == ' ' || t[0] == '\t') && !isBlank(t)) {
			i++
			continue
		}
		break
	}
	if i > headerStart {
		open, openStart = partHeaders, headerStart
	}
	emit(partBody, i)

	quoteAll := false // the quoted part runs to the end of the email
	seenBody := false
	for ; i < len(lines); i++ {
		t := strings.TrimSpace(text(i))
		if open == partQuoted {
			if quoteAll || t == "" || strings.HasPrefix(t, ">") {
				continue
			}
			if q, all := quoteStart(doc, lines, i); q {
				quoteAll = all
				continue
			}
			emit(partBody, i)
			seenBody = true
		}
		if q, all := quoteStart(doc, lines, i); q {
			emit(partQuoted, i)
			quoteAll = all
			continue
		}
		if open == partBody && signatureStart(doc, lines, i, seenBody) {
			emit(partSignature, i)
			continue
		}
		if t != "" {
			seenBody = true
		}
	}
	emit("", len(lines))
	return parts
}

// isHeaderLine reports whether t starts with a known header name and a colon.
func isHeaderLine(t string) bool {
	colon := strings.IndexByte(t, ':')
	if colon <= 0 {
		return false
	}
	name := strings.TrimRight(t[:colon], " \t")
	for _, h := range emailHeaders {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// quoteStart reports whether line i starts a quoted part, and whether that part runs to the end of the
// email (a reply header not followed by '>' lines, or an Original/Forwarded message marker) rather than
// over the following '>' lines only.
func quoteStart(doc string, lines []line, i int) (bool, bool) {
	t := strings.TrimSpace(doc[lines[i].start:lines[i].end])
	switch {
	case t == "":
		return false, false
	case t[0] == '>':
		return true, false
	case strings.HasPrefix(t, "--") || hasPrefixFold(t, "begin forwarded"):
		if containsFold(t, "original message") || containsFold(t, "forwarded message") {
			return true, true
		}
	case strings.HasPrefix(t, "On "):
		if hasSuffixFold(t, "wrote:") ||
			(i+1 < len(lines) && hasSuffixFold(strings.TrimSpace(doc[lines[i+1].start:lines[i+1].end]), "wrote:")) {
			return true, !nextNonBlankQuoted(doc, lines, i+1)
		}
	case hasPrefixFold(t, "from:"):
		return outlookHeader(doc, lines, i), true
	}
	return false, false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// containsFold reports whether s contains the lower-case ASCII string sub, ignoring case. It is only
// used on short marker lines.
func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// nextNonBlankQuoted reports whether the first non-blank line at or after i, skipping a wrapped
// "... wrote:" line, starts with '>'.
func nextNonBlankQuoted(doc string, lines []line, i int) bool {
	for ; i < len(lines); i++ {
		t := strings.TrimSpace(doc[lines[i].start:lines[i].end])
		if t == "" || hasSuffixFold(t, "wrote:") {
			continue
		}
		return strings.HasPrefix(t, ">")
	}
	return false
}

// outlookHeader reports whether the "From:" line i is followed within three lines by "Sent:", "Date:",
// "To:" or "Subject:": the header block Outlook puts above a quoted message.
func outlookHeader(doc string, lines []line, i int) bool {
	for k := i + 1; k < len(lines) && k <= i+3; k++ {
		t := strings.TrimSpace(doc[lines[k].start:lines[k].end])
		for _, p := range [...]string{"sent:", "date:", "to:", "subject:"} {
			if hasPrefixFold(t, p) {
				return true
			}
		}
	}
	return false
}

// signatureStart reports whether line i starts the signature.
func signatureStart(doc string, lines []line, i int, seenBody bool) bool {
	raw := strings.TrimRight(doc[lines[i].start:lines[i].end], " \t")
	if raw == "--" || raw == "—" || raw == "__" {
		return true
	}
	t := strings.TrimSpace(raw)
	if hasPrefixFold(t, "sent from my ") {
		return true
	}
	if !seenBody || len(t) > maxClosingLen || !closings[strings.ToLower(strings.TrimRight(t, ",.!: "))] {
		return false
	}
	rest := 0
	for k := i + 1; k < len(lines); k++ {
		if q, _ := quoteStart(doc, lines, k); q {
			break
		}
		if !isBlank(doc[lines[k].start:lines[k].end]) {
			if rest++; rest > maxSignatureLines {
				return false
			}
		}
	}
	return true
}
