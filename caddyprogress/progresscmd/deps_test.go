package progresscmd_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The module's package must not pull in the command's terminal
// libraries: a Caddy built with the module only has none of them.
func TestTheModuleDoesNotImportTheCommandOrItsLibraries(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "..").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"/progresscmd", "github.com/charmbracelet/", "github.com/muesli/"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("caddyprogress imports %s", pkg)
			}
		}
	}
}
