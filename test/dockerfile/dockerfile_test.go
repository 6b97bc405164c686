// Package dockerfile checks the Dockerfile by construction, since no Docker
// engine runs where the tests do: one target per binary, built by make build.
package dockerfile

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type stage struct {
	base, name string
	lines      []string
}

func parse(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	from := regexp.MustCompile(`(?i)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$`)
	var stages []stage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := from.FindStringSubmatch(line); m != nil {
			stages = append(stages, stage{base: m[1], name: m[2]})
			continue
		}
		if len(stages) == 0 {
			if !strings.HasPrefix(strings.ToUpper(line), "ARG") {
				t.Fatalf("instruction before the first FROM: %q", line)
			}
			continue
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

func TestOneTargetPerBinary(t *testing.T) {
	t.Parallel()
	stages := parse(t, "../../Dockerfile")
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	build, ok := byName["build"]
	if !ok || !containsPrefix(build.lines, "RUN make build") {
		t.Fatal(`the "build" stage must run "make build", so images hold what make build builds`)
	}
	cmds, err := filepath.Glob("../../cmd/*")
	if err != nil || len(cmds) == 0 {
		t.Fatalf("no binaries under cmd/: %v", err)
	}
	for _, dir := range cmds {
		bin := filepath.Base(dir)
		t.Run(bin, func(t *testing.T) {
			s, ok := byName[bin]
			if !ok {
				t.Fatalf("no Dockerfile target %q: add a stage `FROM ... AS %s`", bin, bin)
			}
			if !containsPrefix(s.lines, "COPY --from=build /src/bin/"+bin+" /"+bin) {
				t.Errorf("target %s does not copy bin/%s from the build stage", bin, bin)
			}
			if !containsPrefix(s.lines, `ENTRYPOINT ["/`+bin+`"`) {
				t.Errorf("target %s has no ENTRYPOINT [\"/%s\"]", bin, bin)
			}
			user := lastUser(s, byName)
			want := "65532:65532"
			if bin == "pause" {
				want = "65535:65535"
				if s.base != "scratch" {
					t.Errorf("pause is built FROM %s, want scratch", s.base)
				}
			}
			if user != want {
				t.Errorf("target %s runs as %q, want %s", bin, user, want)
			}
		})
	}
}

// lastUser follows a stage's bases within the file to the USER in force.
func lastUser(s stage, byName map[string]stage) string {
	for {
		for i := len(s.lines) - 1; i >= 0; i-- {
			if u, ok := strings.CutPrefix(s.lines[i], "USER "); ok {
				return strings.TrimSpace(u)
			}
		}
		base, ok := byName[s.base]
		if !ok {
			return ""
		}
		s = base
	}
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
