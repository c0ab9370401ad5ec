package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// newLogger builds the one logger of the process: tint (coloured, for people) on
// a terminal, JSON (for log pipelines) otherwise, unless TETHER_LOG_FORMAT says.
func newLogger(format, level string, w io.Writer) *slog.Logger {
	lvl, _ := parseLevel(level)
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	if format == "json" || (format == "auto" && !tty) {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: durationText}))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: !tty}))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

// durationText writes durations as Go durations ("10m0s", "12.3ms"), the form
// TETHER_* variables take, rather than as the nanosecond counts slog's JSON
// handler writes by default.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
