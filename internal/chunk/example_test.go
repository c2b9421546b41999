package chunk_test

import (
	"errors"
	"fmt"

	"github.com/tenantmem/tenantmem/internal/chunk"
)

func ExampleSplit() {
	doc := "# Intro\n\nWhat this is.\n\n## Setup\n\nRun make install.\n"
	chunks, err := chunk.Split("markdown", doc, chunk.Options{})
	if err != nil {
		panic(err)
	}
	for _, c := range chunks {
		fmt.Printf("%d level=%d parent=%d tokens=%d section=%q %q\n",
			c.Index, c.Level, c.ParentIndex, c.Tokens, c.Metadata["section"], c.Content)
	}
	// Output:
	// 0 level=0 parent=-1 tokens=7 section="Intro" "# Intro\n\nWhat this is."
	// 1 level=0 parent=-1 tokens=7 section="Intro > Setup" "## Setup\n\nRun make install."
}

func ExampleSplit_options() {
	doc := "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu. Nu xi omicron."
	chunks, err := chunk.Split("text", doc, chunk.Options{ParentSize: 16, ChildSize: 16, ParentOverlap: chunk.NoOverlap})
	if err != nil {
		panic(err)
	}
	for _, c := range chunks {
		fmt.Printf("%d %q\n", c.Tokens, c.Content)
	}
	// Output:
	// 16 "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu."
	// 4 "Nu xi omicron."
}

func ExampleSplit_invalid() {
	_, err := chunk.Split("text", "content", chunk.Options{ParentSize: 100, ChildSize: 200})
	var fe *chunk.FieldError
	fmt.Println(errors.As(err, &fe), fe.Field, errors.Is(err, chunk.ErrInvalid))
	fmt.Println(err)
	// Output:
	// true child_size true
	// child_size: must not exceed parent_size 100, got 200
}

func ExampleCountTokens() {
	fmt.Println(chunk.CountTokens("The quick brown fox jumps over the lazy dog."))
	// Output: 10
}
