package chunk

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Window size limits, in tokens.
const (
	// MinSize is the smallest accepted parent or child size.
	MinSize = 16
	// MaxSize is the largest accepted parent or child size. It stays well below the 8191-token input
	// limit of OpenAI's embedding models.
	MaxSize = 8192
)

// NoOverlap requests windows without overlap in Options.ParentOverlap or Options.ChildOverlap (a zero
// overlap means "use the default").
const NoOverlap = -1

// ErrInvalid is the error that every *FieldError wraps, so that callers can map all invalid chunking
// input to one outcome with errors.Is.
var ErrInvalid = errors.New("invalid chunking input")

// FieldError reports an invalid argument of Split or DefaultOptions. Field is the snake_case name of
// the offending input: "document_type", "content", "parent_size", "child_size", "parent_overlap" or
// "child_overlap".
type FieldError struct {
	// Field names the invalid input.
	Field string
	// Message says what is wrong with it, without repeating the field name.
	Message string
}

// Error returns "<field>: <message>".
func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Options sets the window sizes of Split, in tokens as counted by CountTokens.
//
// A zero field takes the document type's default (see DefaultOptions). When the caller sets a size but
// leaves the matching field at zero, the default is scaled to keep the type's proportions: a zero
// ChildSize becomes half the resolved ParentSize (never below MinSize), and a zero overlap keeps the
// type's overlap-to-size ratio (about 8%). Use NoOverlap for no overlap at all.
//
// After defaults are applied, both sizes must lie in [MinSize, MaxSize], ChildSize must not exceed
// ParentSize, and each overlap must be at least zero and less than half of its size.
type Options struct {
	// ParentSize is the largest parent chunk, in tokens.
	ParentSize int
	// ChildSize is the largest child chunk, in tokens.
	ChildSize int
	// ParentOverlap is how many tokens consecutive parent windows share.
	ParentOverlap int
	// ChildOverlap is how many tokens consecutive child windows share.
	ChildOverlap int
}

// defaults holds the per-type sizes of the Python original (llmemory chunking.py _get_chunk_config),
// without its character-count scaling.
var defaults = map[string]Options{
	"text":            {600, 300, 50, 25},
	"markdown":        {600, 300, 50, 25},
	"html":            {600, 300, 50, 25},
	"report":          {600, 300, 50, 25},
	"business_report": {600, 300, 50, 25},
	"unknown":         {600, 300, 50, 25},
	"code":            {800, 400, 60, 30},
	"technical_doc":   {800, 400, 60, 30},
	"pdf":             {800, 400, 60, 30},
	"chat":            {200, 100, 20, 10},
	"email":           {300, 150, 25, 15},
	"legal_document":  {500, 250, 40, 20},
	"presentation":    {400, 200, 30, 15},
	"docx":            {700, 350, 50, 25},
}

// documentTypes is the sorted list of keys of defaults.
var documentTypes = func() []string {
	types := make([]string, 0, len(defaults))
	for t := range defaults {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}()

// DocumentTypes returns the document types that Split and DefaultOptions accept, sorted. The caller
// owns the returned slice.
func DocumentTypes() []string { return slices.Clone(documentTypes) }

// DefaultOptions returns the default window sizes of a document type:
//
//	text, markdown, html, report, business_report, unknown  600/300 tokens, overlaps 50/25
//	code, technical_doc, pdf                               800/400 tokens, overlaps 60/30
//	docx                                                   700/350 tokens, overlaps 50/25
//	legal_document                                         500/250 tokens, overlaps 40/20
//	presentation                                           400/200 tokens, overlaps 30/15
//	email                                                  300/150 tokens, overlaps 25/15
//	chat                                                   200/100 tokens, overlaps 20/10
//
// An unknown document type returns a *FieldError for "document_type".
func DefaultOptions(docType string) (Options, error) {
	o, ok := defaults[docType]
	if !ok {
		return Options{}, &FieldError{
			Field:   "document_type",
			Message: fmt.Sprintf("unknown document type %q (accepted: %s)", docType, strings.Join(documentTypes, ", ")),
		}
	}
	return o, nil
}

// resolve fills the zero fields of o from the defaults of docType and validates the result.
func (o Options) resolve(docType string) (Options, error) {
	d, err := DefaultOptions(docType)
	if err != nil {
		return Options{}, err
	}
	for _, f := range []struct {
		name  string
		value int
	}{{"parent_size", o.ParentSize}, {"child_size", o.ChildSize}} {
		if f.value < 0 {
			return Options{}, &FieldError{Field: f.name, Message: fmt.Sprintf("must not be negative, got %d", f.value)}
		}
	}
	for _, f := range []struct {
		name  string
		value int
	}{{"parent_overlap", o.ParentOverlap}, {"child_overlap", o.ChildOverlap}} {
		if f.value < NoOverlap {
			return Options{}, &FieldError{
				Field:   f.name,
				Message: fmt.Sprintf("must be zero (default), NoOverlap (-1) or positive, got %d", f.value),
			}
		}
	}

	r := o
	if r.ParentSize == 0 {
		r.ParentSize = d.ParentSize
	}
	if r.ChildSize == 0 {
		r.ChildSize = d.ChildSize
		if o.ParentSize != 0 {
			r.ChildSize = max(MinSize, r.ParentSize*d.ChildSize/d.ParentSize)
		}
	}
	r.ParentOverlap = resolveOverlap(o.ParentOverlap, r.ParentSize, d.ParentOverlap, d.ParentSize)
	r.ChildOverlap = resolveOverlap(o.ChildOverlap, r.ChildSize, d.ChildOverlap, d.ChildSize)

	for _, f := range []struct {
		name  string
		value int
	}{{"parent_size", r.ParentSize}, {"child_size", r.ChildSize}} {
		if f.value < MinSize || f.value > MaxSize {
			return Options{}, &FieldError{
				Field:   f.name,
				Message: fmt.Sprintf("must be between %d and %d tokens, got %d", MinSize, MaxSize, f.value),
			}
		}
	}
	if r.ChildSize > r.ParentSize {
		return Options{}, &FieldError{
			Field:   "child_size",
			Message: fmt.Sprintf("must not exceed parent_size %d, got %d", r.ParentSize, r.ChildSize),
		}
	}
	for _, f := range []struct {
		name          string
		overlap, size int
	}{{"parent_overlap", r.ParentOverlap, r.ParentSize}, {"child_overlap", r.ChildOverlap, r.ChildSize}} {
		if 2*f.overlap >= f.size {
			return Options{}, &FieldError{
				Field:   f.name,
				Message: fmt.Sprintf("must be less than half of its size %d, got %d", f.size, f.overlap),
			}
		}
	}
	return r, nil
}

// resolveOverlap applies the zero and NoOverlap conventions to one overlap.
func resolveOverlap(given, size, defaultOverlap, defaultSize int) int {
	switch given {
	case NoOverlap:
		return 0
	case 0:
		return size * defaultOverlap / defaultSize
	}
	return given
}
