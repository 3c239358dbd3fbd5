package cli

import (
	"fmt"
	"io"
	"strings"

	vm "github.com/bitbuilder/bitbuilder/api/iobitbuildertemplate"
)

// barWidth is the number of cells of the progress bar.
const barWidth = 30

// progress shows the progress replies of template add and update: a bar redrawn in place on
// a terminal, one plain line per reply otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	drawn bool
	last  string
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty} }

func (p *progress) update(pr vm.Progress) {
	if !p.tty {
		line := progressLine(pr)
		if line != p.last {
			fmt.Fprintln(p.w, line)
			p.last = line
		}
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s", progressBar(pr))
	p.drawn = true
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

func progressLine(pr vm.Progress) string {
	s := pr.Phase
	if pr.Message != "" {
		s += ": " + pr.Message
	}
	if pr.Objects != nil && pr.TotalObjects != nil && *pr.TotalObjects > 0 {
		s += fmt.Sprintf(" (%d/%d objects)", *pr.Objects, *pr.TotalObjects)
	}
	return s
}

func progressBar(pr vm.Progress) string {
	if pr.Objects == nil || pr.TotalObjects == nil || *pr.TotalObjects <= 0 {
		return progressLine(pr)
	}
	done, total := *pr.Objects, *pr.TotalObjects
	done = min(max(done, 0), total)
	filled := int(done * barWidth / total)
	return fmt.Sprintf("[%s%s] %3d%% %s %d/%d", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled),
		done*100/total, pr.Phase, done, total)
}
