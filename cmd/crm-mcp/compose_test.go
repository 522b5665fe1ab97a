package main

import (
	"bytes"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// No Docker daemon or registry is reachable where the tests run, so
// compose.yaml cannot be started here. These tests read it as compose
// would (YAML with anchors and merge keys, ${VAR} interpolation) and check
// what its users rely on: the plain "docker compose up" runs the one
// SQLite server, and the replicas profile runs Postgres and two replicas
// that any request can reach, each keeping its own audit file. Every
// value crm-mcp reads goes through loadConfig, as at start.

// composeFile is the part of the compose specification compose.yaml
// uses. It is decoded strictly, so a key compose does not know (a typo
// such as "enviroment") fails the test instead of being ignored by it.
type composeFile struct {
	CRMMCP   composeService            `yaml:"x-crm-mcp"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Profiles []string `yaml:"profiles"`
	Build    struct {
		Context string            `yaml:"context"`
		Args    map[string]string `yaml:"args"`
	} `yaml:"build"`
	Image       string            `yaml:"image"`
	EnvFile     string            `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports           []string `yaml:"ports"`
	Volumes         []string `yaml:"volumes"`
	ReadOnly        bool     `yaml:"read_only"`
	Tmpfs           []string `yaml:"tmpfs"`
	CapDrop         []string `yaml:"cap_drop"`
	SecurityOpt     []string `yaml:"security_opt"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	Restart         string   `yaml:"restart"`
	Healthcheck     *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

// testPostgresPassword stands for POSTGRES_PASSWORD, as a user sets it.
const testPostgresPassword = "0f3a9c5e7b2d4f6a8c1e3b5d7f9a2c4e"

// readCompose returns compose.yaml as text and decoded, interpolated with
// POSTGRES_PASSWORD set.
func readCompose(t *testing.T) (string, composeFile) {
	t.Helper()
	b, err := os.ReadFile("../../compose.yaml")
	require.NoError(t, err)
	interpolated := interpolate(t, string(b), map[string]string{"POSTGRES_PASSWORD": testPostgresPassword})
	var f composeFile
	dec := yaml.NewDecoder(bytes.NewReader([]byte(interpolated)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&f), "compose.yaml")
	return string(b), f
}

// interpolate does what compose does to ${NAME} and ${NAME:-default}
// outside comments; any other use of $ fails the test, since these tests
// would not know what compose makes of it.
func interpolate(t *testing.T, text string, vars map[string]string) string {
	t.Helper()
	ref := regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)(:-([^}]*))?\}`)
	var out []string
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
			continue
		}
		line = ref.ReplaceAllStringFunc(line, func(m string) string {
			sub := ref.FindStringSubmatch(m)
			if v := vars[sub[1]]; v != "" {
				return v
			}
			return sub[3]
		})
		assert.NotContains(t, line, "$", "compose.yaml line %d: a $ these tests cannot interpolate", i+1)
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// verifyMarked returns the variables that compose.yaml sets on a line
// marked "# verify:": ones that the lead is to check once the code reading
// them has landed.
func verifyMarked(text string) []string {
	line := regexp.MustCompile(`^\s+([A-Z][A-Z0-9_]*):.*# verify:`)
	var names []string
	for _, l := range strings.Split(text, "\n") {
		if m := line.FindStringSubmatch(l); m != nil && !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	return names
}

// crmMCPServices returns the names of the services that run the image, in
// the profile given ("" for the services that run without a profile).
func crmMCPServices(f composeFile, profile string) []string {
	var names []string
	for name, s := range f.Services {
		if strings.HasPrefix(s.Image, "crm-mcp:") && (profile == "" && len(s.Profiles) == 0 || profile != "" && slices.Contains(s.Profiles, profile)) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// dataVolume returns the named volume a service mounts at /data.
func dataVolume(t *testing.T, f composeFile, name string) string {
	t.Helper()
	for _, v := range f.Services[name].Volumes {
		if src, dst, _ := strings.Cut(v, ":"); dst == "/data" {
			assert.Contains(t, f.Volumes, src, "%s: /data is volume %q, which volumes: does not declare", name, src)
			return src
		}
	}
	t.Errorf("%s mounts no volume at /data", name)
	return ""
}

// TestComposeHardensEveryServer checks that every service running the
// image runs it as the image was verified (.ci/image): read-only root, no
// capabilities, /tmp a tmpfs, /data a volume, configured from .env.
func TestComposeHardensEveryServer(t *testing.T) {
	_, f := readCompose(t)
	names := append(crmMCPServices(f, ""), crmMCPServices(f, "replicas")...)
	require.NotEmpty(t, names)
	for _, name := range names {
		s := f.Services[name]
		assert.True(t, s.ReadOnly, "%s: read_only", name)
		assert.Equal(t, []string{"ALL"}, s.CapDrop, "%s: cap_drop", name)
		assert.Contains(t, s.SecurityOpt, "no-new-privileges:true", name)
		assert.Equal(t, []string{"/tmp"}, s.Tmpfs, "%s: tmpfs", name)
		assert.Equal(t, ".env", s.EnvFile, "%s: env_file", name)
		assert.Equal(t, ".", s.Build.Context, "%s: built from this repository", name)
		assert.NotEmpty(t, s.StopGracePeriod, "%s: the 30 s drain needs a longer grace period than the default 10 s", name)
		dataVolume(t, f, name)
		for _, p := range s.Ports {
			assert.True(t, strings.HasPrefix(p, "127.0.0.1:"), "%s publishes %q: only on the host's loopback, behind the TLS proxy", name, p)
		}
	}
}

// TestComposeDefaultIsOneServer checks that "docker compose up" without a
// profile still runs the one SQLite server, and that nothing of the
// replicas profile can stop it: compose interpolates every service before
// it applies profiles, so a ${VAR:?} there would.
func TestComposeDefaultIsOneServer(t *testing.T) {
	text, f := readCompose(t)
	required := regexp.MustCompile(`\$\{[A-Za-z0-9_]+:?\?`)
	for i, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			assert.False(t, required.MatchString(line), "compose.yaml line %d: a ${VAR:?...} stops every docker compose command without VAR, profile or not", i+1)
		}
	}
	var always []string
	for name, s := range f.Services {
		if len(s.Profiles) == 0 {
			always = append(always, name)
		}
	}
	assert.Equal(t, []string{"crm-mcp"}, always, "the services that run without a profile")
	s := f.Services["crm-mcp"]
	assert.Equal(t, []string{"127.0.0.1:8080:8080"}, s.Ports)
	assert.Empty(t, s.Environment, "configured by .env alone")
	c, err := loadConfig(with(minimalEnv(), "MCP_LISTEN_ADDR", ":8080"))
	require.NoError(t, err)
	assert.Empty(t, c.DatabaseURL, "SQLite")
}

// TestComposeReplicasProfile checks the replicas profile: Postgres and two
// replicas of the image on it through one CRM_DATABASE_URL, stateless so
// that any replica can take any request, each with an audit file of its
// own, and every variable they set read by config (or marked # verify:
// for the lead, until the code reading it lands).
func TestComposeReplicasProfile(t *testing.T) {
	text, f := readCompose(t)
	replicas := crmMCPServices(f, "replicas")
	require.Len(t, replicas, 2, "two replicas")

	pg, ok := f.Services["postgres"]
	require.True(t, ok, "a postgres service")
	assert.Equal(t, []string{"replicas"}, pg.Profiles)
	assert.True(t, strings.HasPrefix(pg.Image, "postgres:"), "the official image: %s", pg.Image)
	assert.Equal(t, testPostgresPassword, pg.Environment["POSTGRES_PASSWORD"], "from POSTGRES_PASSWORD")
	assert.Empty(t, pg.Ports, "Postgres is reached on the compose network only")
	require.NotNil(t, pg.Healthcheck, "the replicas wait for a healthy Postgres")
	assert.Contains(t, pg.Healthcheck.Test, "pg_isready")
	assert.Contains(t, pg.Healthcheck.Test, "--host=127.0.0.1", "over TCP: during the image's first-start initialisation only the Unix socket answers")
	pgVolume := ""
	for _, v := range pg.Volumes {
		if src, dst, _ := strings.Cut(v, ":"); dst == "/var/lib/postgresql/data" {
			pgVolume = src
		}
	}
	assert.Contains(t, f.Volumes, pgVolume, "Postgres keeps its data in a declared volume")

	marked := verifyMarked(text)
	known := knownVariables()
	for _, name := range marked {
		assert.NotContains(t, known, name, "config reads %s now: drop the # verify: mark of its lines in compose.yaml", name)
	}
	setting := regexp.MustCompile(`^\s+([A-Z][A-Z0-9_]*):`)
	for i, line := range strings.Split(text, "\n") {
		m := setting.FindStringSubmatch(line)
		if m == nil || slices.Contains(known, m[1]) || !slices.ContainsFunc(replicas, func(r string) bool { _, ok := f.Services[r].Environment[m[1]]; return ok }) {
			continue
		}
		assert.Contains(t, line, "# verify:", "compose.yaml line %d sets %s, which config does not read: mark it # verify: or drop it", i+1, m[1])
	}

	var dbURL string
	auditFiles := map[string]string{} // audit file -> replica
	volumes := map[string]string{}    // volume at /data -> replica
	ports := map[string]string{}      // published port -> replica
	for _, name := range replicas {
		s := f.Services[name]
		assert.Equal(t, "service_healthy", s.DependsOn["postgres"].Condition, "%s waits for Postgres", name)

		env := s.Environment
		u, err := url.Parse(env["CRM_DATABASE_URL"])
		require.NoError(t, err, "%s: CRM_DATABASE_URL", name)
		assert.Equal(t, "postgres", u.Hostname(), "%s: the postgres service", name)
		assert.Equal(t, pg.Environment["POSTGRES_USER"], u.User.Username(), name)
		password, _ := u.User.Password()
		assert.Equal(t, testPostgresPassword, password, "%s: the password is POSTGRES_PASSWORD", name)
		assert.Equal(t, "/"+pg.Environment["POSTGRES_DB"], u.Path, name)
		if dbURL == "" {
			dbURL = env["CRM_DATABASE_URL"]
		}
		assert.Equal(t, dbURL, env["CRM_DATABASE_URL"], "%s shares the database", name)

		for v := range env {
			assert.True(t, slices.Contains(known, v) || slices.Contains(marked, v), "%s sets %s, which config does not read: mark its line # verify: or drop it", name, v)
		}

		// What the replica's serve makes of it, with .env's required
		// variables filled in and the image's MCP_LISTEN_ADDR.
		environ := with(minimalEnv(), "MCP_LISTEN_ADDR", ":8080")
		for k, v := range env {
			environ[k] = v
		}
		c, err := loadConfig(environ)
		require.NoError(t, err, "%s", name)
		assert.Equal(t, dbURL, c.DatabaseURL.reveal(), name)
		assert.Empty(t, c.warnings, "%s: serve warns at start", name)
		for _, v := range c.unknown {
			assert.Contains(t, marked, v, "%s: serve would warn that it does not read %s", name, v)
		}

		// One audit file per replica, on its own volume, named so that
		// the files can be gathered in one place and merged.
		assert.NotEmpty(t, env["MCP_REPLICA_ID"], "%s: a fixed replica id (the container's host name changes when it is recreated, and with it the file)", name)
		path := strings.ReplaceAll(env["AUDIT_LOG_PATH"], "{replica}", env["MCP_REPLICA_ID"])
		assert.True(t, strings.HasPrefix(path, "/data/"), "%s: the audit file %q is in the /data volume", name, path)
		assert.NotContains(t, auditFiles, path, "%s names its audit file as %s does", name, auditFiles[path])
		auditFiles[path] = name
		volume := dataVolume(t, f, name)
		assert.NotContains(t, volumes, volume, "%s shares /data with %s", name, volumes[volume])
		volumes[volume] = name

		require.Len(t, s.Ports, 1, name)
		assert.NotContains(t, ports, s.Ports[0], "%s publishes the port of %s", name, ports[s.Ports[0]])
		ports[s.Ports[0]] = name
	}
}
