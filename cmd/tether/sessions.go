package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/gateway/admin"
)

// sessionsCommand prints the live sessions of a running gateway, read from its
// admin listener.
func sessionsCommand(ctx context.Context, args []string, environ map[string]string, stdout io.Writer) error {
	def := environ["TETHER_METRICS_LISTEN"]
	if def == "" {
		def = ":9090"
	}
	fs := flag.NewFlagSet("tether sessions", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", dialAddr(tcpAddr(def)), "the gateway's admin address (TETHER_METRICS_LISTEN)")
	asJSON := fs.Bool("json", false, "print the JSON the gateway serves")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the usage is printed; asking for it is no failure
		}
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/sessions", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reading sessions from %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reading sessions from %s: %s", *addr, resp.Status)
	}
	var view admin.SessionsView
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		return fmt.Errorf("reading sessions from %s: %w", *addr, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(view)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tIDENTITY\tINSTANCE\tCPU\tMEMORY\tAGE\tIDLE\tSTREAMS\tBYTES IN\tBYTES OUT")
	for _, s := range view.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", s.ID, s.Identity, s.Instance, s.CPU, s.Memory,
			seconds(s.AgeSeconds), seconds(s.IdleSeconds), s.Streams, s.BytesIn, s.BytesOut)
	}
	return tw.Flush()
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

var _ net.Addr = tcpAddr("")
