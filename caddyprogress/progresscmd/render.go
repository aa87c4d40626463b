package progresscmd

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/lipgloss"
	"github.com/dustin/go-humanize"
	"github.com/muesli/termenv"
)

// palette colours the states; with the Ascii profile (NO_COLOR, or not
// a terminal) every colour is dropped and only the text is left.
type palette struct {
	profile termenv.Profile
	r       *lipgloss.Renderer
}

// stateColors are the bar and state colours of each state.
var stateColors = map[string]string{
	"pending":    "#808080",
	"uploading":  "#5F87FF",
	"processing": "#00AFAF",
	"delivering": "#00AFAF",
	"paused":     "#808080",
	"complete":   "#00AF5F",
	"error":      "#D70000",
	"aborted":    "#D7AF00",
}

func (p palette) state(s string) string {
	return p.r.NewStyle().Foreground(lipgloss.Color(stateColors[s])).Render(s)
}

func (p palette) bold(s string) string { return p.r.NewStyle().Bold(true).Render(s) }

func (p palette) faint(s string) string { return p.r.NewStyle().Faint(true).Render(s) }

// bar draws a progress bar of width cells, filled to fraction, in the
// state's colour (Bubbles' progress bar, without its percentage).
func (p palette) bar(width int, fraction float64, state string) string {
	color := stateColors[state]
	if color == "" {
		color = stateColors["uploading"]
	}
	m := progress.New(
		progress.WithoutPercentage(),
		progress.WithWidth(width),
		progress.WithSolidFill(color),
		progress.WithColorProfile(p.profile),
	)
	return m.ViewAs(fraction)
}

// The columns of an upload line: ID, bar, percent, received / total,
// speed, time left, state.
const (
	maxIDWidth    = 22
	minIDWidth    = 8
	percentWidth  = 4
	amountWidth   = 21 // "1023.9 MiB / 1023.9 MiB"
	speedWidth    = 11
	leftWidth     = 7
	stateWidth    = 10
	minBarWidth   = 5
	maxBarWidth   = 60
	minInstWidth  = 8 // "INSTANCE"
	maxInstWidth  = 20
	otherColumns  = 2 + 1 + 1 + percentWidth + 1 + amountWidth + 1 + speedWidth + 1 + leftWidth + 1 + stateWidth
	defaultWidth  = 100
	indentPerStep = 2
)

// layout is the widths of the ID, instance and bar columns for a screen
// width: the ID narrows before the bar goes below its minimum. The
// instance column (after the ID) is there for a tracker whose uploads
// are every instance's, 0 otherwise; on a narrow screen it narrows
// first, to 4 cells.
type layout struct{ id, instance, bar int }

const narrowestInstance = 4

func layoutFor(width, instance int) layout {
	others := otherColumns
	if instance > 0 {
		instance = max(narrowestInstance, min(instance, width-otherColumns-1-minIDWidth-minBarWidth))
		others += instance + 1
	}
	id := min(maxIDWidth, max(minIDWidth, width-others-minBarWidth))
	return layout{id: id, instance: instance, bar: min(maxBarWidth, max(minBarWidth, width-others-id))}
}

// instanceWidth is the width of a tracker's instance column: 0 unless
// its uploads are every instance's, else its longest instance name,
// within bounds.
func instanceWidth(t trackerInfo) int {
	if t.Cluster == nil {
		return 0
	}
	w := minInstWidth
	for _, u := range t.Uploads {
		w = max(w, lipgloss.Width(printable(u.Instance, false)))
	}
	return min(w, maxInstWidth)
}

// instanceCell is an upload's instance, cut to the column, with the
// space before it; "" without the column.
func (l layout) instanceCell(name string) string {
	if l.instance == 0 {
		return ""
	}
	name = truncate(printable(name, false), l.instance)
	return " " + name + strings.Repeat(" ", max(0, l.instance-lipgloss.Width(name)))
}

// screen is everything `top` draws at one moment.
type screen struct {
	address   string // the admin address, for the title
	trackers  []trackerInfo
	tracker   string // the --tracker filter, "" for all
	err       error  // the last refresh's error, shown above the last good view
	showFiles bool
	width     int
	now       time.Time
}

// render draws s as lines no wider than s.width.
func (p palette) render(s screen) string {
	var b strings.Builder
	line := func(text string) {
		b.WriteString(p.r.NewStyle().MaxWidth(s.width).Render(text))
		b.WriteByte('\n')
	}
	inFlight, speed := 0, int64(0)
	for _, t := range s.trackers {
		for _, u := range t.Uploads {
			if !finalStates[u.Status] {
				inFlight++
				speed += u.Speed
			}
		}
	}
	line(p.bold(fmt.Sprintf("upload-progress at %s", s.address)) +
		fmt.Sprintf(" · %s in flight · %s", plural(inFlight, "upload"), perSecond(speed)))
	if s.err != nil {
		line(p.state("error") + " " + printable(s.err.Error(), false))
	}
	if s.tracker != "" && len(s.trackers) == 0 && s.err == nil {
		line(fmt.Sprintf("no tracker named %q is in use", s.tracker)) // %q escapes control characters
	}
	for _, t := range s.trackers {
		cols := layoutFor(s.width, instanceWidth(t))
		line("")
		n, sp := 0, int64(0)
		for _, u := range t.Uploads {
			if !finalStates[u.Status] {
				n++
				sp += u.Speed
			}
		}
		line(p.bold("tracker "+printable(t.Name, false)) + fmt.Sprintf(" · %s in flight · %s · memory %s of %s",
			plural(n, "upload"), perSecond(sp), size(t.Memory), size(t.MaxMemory)))
		p.clusterLines(line, t, n)
		if len(t.Uploads) == 0 {
			line(p.faint("  no uploads"))
			continue
		}
		line(p.faint(fmt.Sprintf("  %-*s%s %-*s %*s %*s %*s %*s %s", cols.id, "ID", cols.instanceCell("INSTANCE"), cols.bar, "PROGRESS",
			percentWidth, "%", amountWidth, "RECEIVED / TOTAL", speedWidth, "SPEED", leftWidth, "LEFT", "STATE")))
		done := make(map[string]bool)
		for _, u := range t.Uploads {
			if u.Group == "" {
				p.uploadLines(line, u, 0, cols, s.showFiles)
				continue
			}
			if done[u.Group] {
				continue
			}
			done[u.Group] = true
			var members []uploadInfo
			for _, m := range t.Uploads {
				if m.Group == u.Group {
					members = append(members, m)
				}
			}
			p.uploadLines(line, groupSummary(u.Group, members), 0, cols, false)
			for _, m := range members {
				p.uploadLines(line, m, 1, cols, s.showFiles)
			}
		}
	}
	return b.String()
}

// clusterLines say where a tracker's uploads come from, with redis:
// its Redis when down, and whether the uploads are every instance's
// (inFlight of them listed in flight).
func (p palette) clusterLines(line func(string), t trackerInfo, inFlight int) {
	up := false
	for _, r := range t.Redis {
		if r.Up {
			up = true
		} else {
			line("  " + p.state("error") + " redis down since " + r.Since.Format(time.RFC3339) + ": " + printable(r.LastError, false))
		}
	}
	switch c := t.Cluster; {
	case c != nil && c.Available:
		text := "  redis up · uploads of every instance; this one is " + printable(c.Instance, false)
		if c.Truncated {
			text += fmt.Sprintf(" · %d of %d in flight shown", inFlight, c.InFlight)
		}
		if c.Skipped > 0 {
			text += fmt.Sprintf(" · %s unreadable", plural(c.Skipped, "upload"))
		}
		line(text)
	case c != nil:
		line("  " + p.state("error") + " cluster unavailable: uploads shown are this instance's (" + printable(c.Instance, false) + ")")
	case up:
		line("  redis up · uploads shown are this instance's")
	}
}

// uploadLines writes an upload's line, and its files' when shown.
func (p palette) uploadLines(line func(string), u uploadInfo, depth int, cols layout, showFiles bool) {
	indent := strings.Repeat(" ", depth*indentPerStep)
	id := truncate(indent+printable(u.ID, false), cols.id)
	fraction, percent := 0.0, "-"
	amount := size(u.Received)
	if u.Total != nil {
		amount += " / " + size(*u.Total)
		if *u.Total > 0 {
			fraction = math.Min(1, float64(u.Received)/float64(*u.Total))
		} else {
			fraction = 1
		}
		percent = fmt.Sprintf("%d%%", int(fraction*100))
	} else {
		amount += " / ?"
	}
	left := "-"
	switch {
	case finalStates[u.Status]:
		left = ""
	case u.Total != nil && u.Speed > 0 && u.Status == "uploading":
		left = duration(time.Duration(float64(*u.Total-u.Received) / float64(u.Speed) * float64(time.Second)))
	}
	line(fmt.Sprintf("  %-*s%s %s %*s %*s %*s %*s %s", cols.id, id, cols.instanceCell(u.Instance), p.bar(cols.bar, fraction, u.Status),
		percentWidth, percent, amountWidth, amount, speedWidth, perSecond(u.Speed), leftWidth, left, p.state(u.Status)))
	if u.Error != "" {
		line("  " + indent + "  " + printable(u.Error, false))
	}
	if u.FilesTruncated {
		line(p.faint("  " + indent + "  files not shared: their instance shows them"))
	}
	if len(u.Files) == 0 {
		return
	}
	if !showFiles {
		line(p.faint(fmt.Sprintf("  %s  %s (f shows them)", indent, plural(len(u.Files), "file"))))
		return
	}
	for _, f := range u.Files {
		name := printable(f.Field, false)
		if f.Filename != nil {
			name = printable(*f.Filename, false) + " (" + name + ")"
		}
		nameWidth := cols.id + len(cols.instanceCell("")) + 1 + cols.bar - len(indent) - 2
		line(fmt.Sprintf("  %s  %-*s %*s %s", indent, nameWidth, truncate(name, nameWidth),
			percentWidth+1+amountWidth, size(f.Received), f.Status))
	}
}

// groupSummary is the line of a group: its members' sums, in flight
// while one of them is.
func groupSummary(id string, members []uploadInfo) uploadInfo {
	g := uploadInfo{ID: "group " + id, Status: "complete"}
	var total int64
	known := true
	for _, m := range members {
		g.Received += m.Received
		if m.Total == nil {
			known = false
		} else {
			total += *m.Total
		}
		if !finalStates[m.Status] {
			g.Speed += m.Speed
		}
	}
	if known {
		g.Total = &total
	}
	g.Status = groupState(members)
	return g
}

// groupState is uploading while any member is in flight, then error,
// aborted or complete as the proxy's group status says.
func groupState(members []uploadInfo) string {
	state := "complete"
	for _, m := range members {
		switch {
		case !finalStates[m.Status]:
			return "uploading"
		case m.Status == "error":
			state = "error"
		case m.Status == "aborted" && state != "error":
			state = "aborted"
		}
	}
	return state
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func size(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func perSecond(n int64) string { return size(n) + "/s" }

// duration is a short time left: 9s, 4m05s, 2h03m.
func duration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// truncate cuts s to width cells, ending in … when cut.
func truncate(s string, width int) string {
	if lipgloss.Width(s) <= width {
		return s
	}
	r := []rune(s)
	for len(r) > 0 && lipgloss.Width(string(r))+1 > width {
		r = r[:len(r)-1]
	}
	return string(r) + "…"
}
