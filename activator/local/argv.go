package local

import (
	"fmt"
	"strings"
)

// unsupported are the characters that mean more than a literal byte to a shell when
// they stand outside quotes. Passing them on literally would run something other
// than what the operator wrote, so splitWords refuses them.
const unsupported = "|&;<>()$`"

// splitWords splits a command line into words as a POSIX shell does, without any
// expansion: blanks separate words; '…' keeps its contents literally; "…" keeps its
// contents literally except for \" \\ \$ \` and backslash-newline; a backslash
// outside quotes makes the next character literal (and removes a newline).
// Shell syntax that would do more than quote is an error that points at sh -c.
//
// The scan is byte-wise: every character it treats specially is ASCII, and no byte
// of a multi-byte UTF-8 sequence is ASCII, so other text passes through intact.
func splitWords(s string) ([]string, error) {
	var (
		words  []string
		word   strings.Builder
		inWord bool // a word has begun, even if it is still empty (as with "")
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 == len(s) {
				return nil, fmt.Errorf("backslash at the end of %q escapes nothing", s)
			}
			i++
			if s[i] == '\n' { // a line continuation joins the two lines
				continue
			}
			word.WriteByte(s[i])
			inWord = true
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote at byte %d of %q", i, s)
			}
			word.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			start := i
			inWord = true
			for i++; ; i++ {
				if i == len(s) {
					return nil, fmt.Errorf("unterminated double quote at byte %d of %q", start, s)
				}
				d := s[i]
				if d == '"' {
					break
				}
				if d == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
					if s[i] != '\n' {
						word.WriteByte(s[i])
					}
					continue
				}
				if d == '$' || d == '`' {
					return nil, shellSyntax(s, i)
				}
				word.WriteByte(d)
			}
		case c == '#' && !inWord, strings.IndexByte(unsupported, c) >= 0:
			return nil, shellSyntax(s, i)
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

func shellSyntax(s string, i int) error {
	return fmt.Errorf("%q at byte %d of %q is shell syntax, which is not interpreted: quote it to pass it literally, or run the command through sh -c '...'", s[i], i, s)
}
