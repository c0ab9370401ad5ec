package local

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" \t\n ", nil},
		{"server", []string{"server"}},
		{"  /bin/server  -listen\t127.0.0.1:{port}\n", []string{"/bin/server", "-listen", "127.0.0.1:{port}"}},
		{`sh -c 'echo "$PORT" | cat; exit 3'`, []string{"sh", "-c", `echo "$PORT" | cat; exit 3`}},
		{`"a b" 'c d'`, []string{"a b", "c d"}},
		{`a"b c"d'e f'g`, []string{"ab cde fg"}},
		{`'' ""`, []string{"", ""}},
		{`x '' y`, []string{"x", "", "y"}},
		{`a\ b`, []string{"a b"}},
		{`\'\"\\\|\$`, []string{`'"\|$`}},
		{"a\\\nb", []string{"ab"}},
		{"a \\\n b", []string{"a", "b"}},
		{`"\"\\\$\` + "`" + `"`, []string{`"\$` + "`"}},
		{`"\n\a"`, []string{`\n\a`}}, // in double quotes, other backslashes stay
		{"\"a\\\nb\"", []string{"ab"}},
		{`'\n' '"'`, []string{`\n`, `"`}}, // single quotes keep everything
		{`'it'\''s'`, []string{"it's"}},
		{"héllo 'wörld'", []string{"héllo", "wörld"}},
		{"*.go ~x [a] {port} a=b a#b", []string{"*.go", "~x", "[a]", "{port}", "a=b", "a#b"}}, // no globbing, passed on
		{`'#' \#`, []string{"#", "#"}},
	} {
		got, err := splitWords(tc.in)
		if err != nil {
			t.Errorf("splitWords(%q): %v", tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitWordsRefusesShellSyntax(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`'abc`, "unterminated single quote"},
		{`a "abc`, "unterminated double quote"},
		{`"abc\"`, "unterminated double quote"},
		{`abc\`, "backslash at the end"},
		{`server > log`, `'>'`},
		{`server 2>&1`, `'>'`},
		{`server | tee`, `'|'`},
		{`a; b`, `';'`},
		{`a && b`, `'&'`},
		{`server &`, `'&'`},
		{`(server)`, `'('`},
		{`server <in`, `'<'`},
		{`server --port $PORT`, `'$'`},
		{`server "$PORT"`, `'$'`},
		{"server `id`", "'`'"},
		{"server \"`id`\"", "'`'"},
		{`server # comment`, `'#'`},
	} {
		_, err := splitWords(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("splitWords(%q) error = %v, want one containing %s", tc.in, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "unterminated") && !strings.Contains(err.Error(), "backslash") &&
			!strings.Contains(err.Error(), "sh -c") {
			t.Errorf("splitWords(%q) error %q does not point at sh -c", tc.in, err)
		}
	}
}

// Every accepted command line must split as sh itself splits it.
func TestSplitWordsAgreesWithSh(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to compare with: %v", err)
	}
	for _, in := range []string{
		`a "b c" 'd e' f\ g`,
		`a"b c"d'e f'g`,
		`'' "" x`,
		`\'\"\\\|\$`,
		"a\\\nb c",
		`"\"\\\$\` + "`" + `"`,
		`"\n\a" '\n'`,
		`'it'\''s'`,
		"héllo 'wörld' {port} a=b a#b",
	} {
		want, err := splitWords(in)
		if err != nil {
			t.Fatalf("splitWords(%q): %v", in, err)
		}
		// printf prints each word sh made, NUL-terminated.
		out, err := exec.Command(sh, "-c", `printf '%s\0' `+in).Output()
		if err != nil {
			t.Fatalf("sh -c %q: %v", in, err)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if !slices.Equal(got, want) {
			t.Errorf("%q: sh splits it as %q, splitWords as %q", in, got, want)
		}
	}
}
