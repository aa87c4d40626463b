package progresscmd

import (
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// sendModel is send's view (Bubble Tea, inline): a line per file and one
// for all, from the proxy's statuses. Ctrl-C stops the uploads (a
// resumable one can go on in a new run) and the view ends once they
// have stopped.
type sendModel struct {
	rows    []sendRow
	cancel  func()
	palette palette
	width   int
	started time.Time
	took    time.Duration // from the start to the last upload's end, once all ended
}

type sendRow struct {
	name    string
	size    int64
	status  statusDoc
	note    string
	outcome *outcome
}

// allDone says every upload has ended.
type allDone struct{}

func newSendModel(jobs []fileJob, cancel func(), p palette) *sendModel {
	m := &sendModel{cancel: cancel, palette: p, width: defaultWidth, started: time.Now()}
	for _, j := range jobs {
		m.rows = append(m.rows, sendRow{name: j.name, size: j.info.Size(), status: statusDoc{Status: "pending"}})
	}
	return m
}

func (m *sendModel) Init() tea.Cmd { return nil }

func (m *sendModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		if msg.String() == "ctrl+c" {
			m.cancel()
		}
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case fileStatus:
		r := &m.rows[msg.index]
		if r.outcome == nil && !finalStates[r.status.Status] {
			r.status = msg.status
		}
	case fileNote:
		m.rows[msg.index].note = msg.note
	case fileDone:
		out := msg.outcome
		m.rows[msg.index].outcome = &out
	case allDone:
		m.took = time.Since(m.started)
		return m, tea.Quit
	}
	return m, nil
}

func (m *sendModel) View() string {
	var b strings.Builder
	line := func(text string) {
		b.WriteString(m.palette.r.NewStyle().MaxWidth(m.width).Render(text))
		b.WriteByte('\n')
	}
	cols := layoutFor(m.width, 0)
	all := uploadInfo{ID: "all", Status: "complete"}
	var total int64
	var members []uploadInfo
	for _, r := range m.rows {
		u := r.info()
		members = append(members, u)
		all.Received += u.Received
		total += r.size
		if !finalStates[u.Status] {
			all.Speed += u.Speed
		}
		m.palette.uploadLines(line, u, 0, cols, false)
		if r.note != "" && r.outcome == nil {
			line("    " + m.palette.faint(printable(r.note, false)))
		}
	}
	all.Total = &total
	all.Status = groupState(members)
	if m.took > 0 {
		all.Speed = int64(float64(all.Received) / m.took.Seconds()) // the average over the whole send
	}
	if len(m.rows) > 1 {
		m.palette.uploadLines(line, all, 0, cols, false)
	}
	return b.String()
}

// info is the row as a line of the view: the proxy's status, or the
// outcome once there is one.
func (r sendRow) info() uploadInfo {
	u := uploadInfo{ID: r.name, Status: r.status.Status, Received: r.status.Received, Total: r.status.Total, Speed: r.status.Speed}
	if u.Total == nil {
		u.Total = &r.size
	}
	if r.outcome != nil {
		u.Status, u.Error = r.outcome.state, r.outcome.reason
		if u.Status == "complete" {
			u.Received = *u.Total // the whole body was read, whether or not the proxy's progress was seen
		}
		if u.Status == "interrupted" {
			u.Status = "paused"
			u.Error = "interrupted: " + r.outcome.reason
			u.Speed = 0
		}
	}
	return u
}
