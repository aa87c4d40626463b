package progresscmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddyserver/caddy/v2"
)

func topCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top [--admin <addr>] [--tracker <name>] [--local] [--once | --json]",
		Short: "A live view of the uploads in flight",
		Long: `
Shows the uploads that a running Caddy's upload_progress trackers follow,
read from its admin API (GET /upload_progress/): one line per upload with
its progress, speed, time left and state, a multipart upload's files
under it (f shows or hides them), the members of a group under the
group's line, and finished uploads for a few seconds in their final
state. Totals at the top: uploads in flight, their throughput, and each
tracker's memory against its max_memory.

A tracker with redis shows the uploads of every instance that shares it
(GET /upload_progress/?cluster=1), each with the instance that runs it;
--local shows only those of the instance at --admin.

--admin is the admin endpoint (as for "caddy stop": e.g. localhost:2019;
default the --config file's admin address, else Caddy's default).
q, Esc or Ctrl-C quits. NO_COLOR=1 turns colours off.

--once prints one snapshot as text, --json as JSON (the admin listing of
the trackers shown), for scripts and when the output is not a terminal.
`,
		Args: cobra.NoArgs,
	}
	flags := cmd.Flags()
	admin := flags.String("admin", "", "admin API address (default: the --config file's, else "+caddy.DefaultAdminListen+")")
	config := flags.StringP("config", "c", "", "Caddy config file to take the admin address from")
	adapter := flags.StringP("adapter", "a", "", "name of the config adapter of --config")
	tracker := flags.String("tracker", "", "show only this tracker (default all)")
	interval := flags.Duration("interval", 500*time.Millisecond, "how often to read the admin API")
	linger := flags.Duration("linger", 5*time.Second, "how long a finished upload stays on the screen")
	once := flags.Bool("once", false, "print one snapshot as text and exit")
	asJSON := flags.Bool("json", false, "print one snapshot as JSON and exit")
	local := flags.Bool("local", false, "show only the uploads of the instance at --admin (with redis, top shows every instance's)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *interval < 50*time.Millisecond {
			return fmt.Errorf("--interval %s is too short: at least 50ms", *interval)
		}
		client, err := newAdminClient(*admin, *config, *adapter)
		if err != nil {
			return err
		}
		b := newBoard(client, *tracker, *linger, !*local)
		address := client.address
		switch {
		case *asJSON:
			return printJSON(cmd.Context(), b)
		case *once || !term.IsTerminal(int(os.Stdout.Fd())):
			return printOnce(cmd.Context(), b, address, *tracker)
		case !term.IsTerminal(int(os.Stdin.Fd())):
			return fmt.Errorf("the live view needs a terminal for its keys: use --once or --json")
		}
		m := &topModel{board: b, interval: *interval, screen: screen{address: address, tracker: *tracker, width: defaultWidth}}
		m.palette = newPalette(termenv.NewOutput(os.Stdout).EnvColorProfile())
		_, err = tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(cmd.Context())).Run()
		if err == tea.ErrProgramKilled && cmd.Context().Err() != nil {
			return nil
		}
		return err
	}
	return cmd
}

// newPalette draws with the given colour profile.
func newPalette(profile termenv.Profile) palette {
	r := lipgloss.NewRenderer(os.Stdout)
	r.SetColorProfile(profile)
	return palette{profile: profile, r: r}
}

// printOnce prints one snapshot as text, without colours.
func printOnce(ctx context.Context, b *board, address, tracker string) error {
	trackers, err := b.refresh(ctx, time.Now())
	if err != nil {
		return err
	}
	width := defaultWidth
	if w, _, err := term.GetSize(int(os.Stdout.Fd())); err == nil && w > 0 {
		width = w
	}
	_, err = fmt.Fprint(os.Stdout, newPalette(termenv.Ascii).render(screen{
		address: address, tracker: tracker, trackers: trackers, width: width, showFiles: true,
	}))
	return err
}

// snapshotJSON is what --json prints.
type snapshotJSON struct {
	// Uploads counts the uploads in flight, and Speed is their sum.
	Uploads  int           `json:"uploads"`
	Speed    int64         `json:"speed"`
	Trackers []trackerInfo `json:"trackers"`
}

// printJSON prints one snapshot as JSON.
func printJSON(ctx context.Context, b *board) error {
	trackers, err := b.refresh(ctx, time.Now())
	if err != nil {
		return err
	}
	doc := snapshotJSON{Trackers: trackers}
	for _, t := range trackers {
		for _, u := range t.Uploads {
			if !finalStates[u.Status] {
				doc.Uploads++
				doc.Speed += u.Speed
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// topModel is the live view (Bubble Tea): it refreshes the board every
// interval, and redraws it when it changes or the window does.
type topModel struct {
	board    *board
	interval time.Duration
	screen   screen
	palette  palette
}

type boardMsg struct {
	trackers []trackerInfo
	err      error
}

type tickMsg struct{}

func (m *topModel) Init() tea.Cmd { return m.refresh }

// refresh reads the admin API, off the UI's goroutine.
func (m *topModel) refresh() tea.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	trackers, err := m.board.refresh(ctx, time.Now())
	return boardMsg{trackers: trackers, err: err}
}

func (m *topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "esc", "ctrl+c":
			return m, tea.Quit
		case "f":
			m.screen.showFiles = !m.screen.showFiles
		}
	case tea.WindowSizeMsg:
		m.screen.width = msg.Width
	case boardMsg:
		m.screen.err = msg.err
		if msg.err == nil {
			m.screen.trackers = msg.trackers
		}
		return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{} })
	case tickMsg:
		return m, m.refresh
	}
	return m, nil
}

func (m *topModel) View() string {
	return m.palette.render(m.screen) + m.palette.faint("q quits · f shows or hides files")
}
