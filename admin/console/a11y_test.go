package console_test

import (
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
)

// Every page of the console is usable with a screen reader and a keyboard
// as far as its markup decides: the document names its language and has a
// title and one main landmark; every form control a person fills in has a
// label (a <label for>, a wrapping <label> or aria-label); every button and
// link says what it does; images carry alternative text. The browser test
// covers the phone-width layout, the stylesheet the visible focus ring.
func TestPagesAreAccessible(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	signin := b.get("/console/signin")
	b.mustSignIn(admintest.OperatorToken)
	id := createKey(t, e, "accessible", "user_a", "")
	pages := map[string]string{"/console/signin": signin.body}
	for _, path := range []string{"/console/keys", "/console/keys?unused_for=90d", "/console/keys/" + id, "/console/audit", "/console/sessions", "/console/status", "/console/nowhere"} {
		p := b.get(path)
		if p.status != http.StatusOK && p.status != http.StatusNotFound {
			t.Fatalf("%s: %d", path, p.status)
		}
		pages[path] = p.body
	}
	for path, body := range pages {
		for _, problem := range accessibilityProblems(body) {
			t.Errorf("%s: %s", path, problem)
		}
	}
}

// accessibilityProblems lists what the markup of one page gets wrong.
func accessibilityProblems(body string) []string {
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	var problems []string
	labelled := map[string]bool{} // ids named by <label for>
	var controls []*html.Node     // with whether a <label> wraps them
	wrapped := map[*html.Node]bool{}
	var title, lang bool
	mains := 0
	var walk func(n *html.Node, inLabel bool)
	walk = func(n *html.Node, inLabel bool) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "html":
				lang = attr(n, "lang") != ""
			case "title":
				title = strings.TrimSpace(text(n)) != ""
			case "main":
				mains++
			case "label":
				if f := attr(n, "for"); f != "" {
					labelled[f] = true
				}
				inLabel = true
			case "input", "select", "textarea":
				switch attr(n, "type") {
				case "hidden", "submit", "button":
				default:
					controls = append(controls, n)
					wrapped[n] = inLabel
				}
				if t := attr(n, "type"); (t == "submit" || t == "button") && attr(n, "value") == "" && attr(n, "aria-label") == "" {
					problems = append(problems, "an input button with no value")
				}
			case "button":
				if strings.TrimSpace(text(n)) == "" && attr(n, "aria-label") == "" {
					problems = append(problems, "a button with no text")
				}
			case "a":
				if attr(n, "href") != "" && strings.TrimSpace(text(n)) == "" && attr(n, "aria-label") == "" {
					problems = append(problems, "a link with no text: "+attr(n, "href"))
				}
			case "img":
				if _, ok := attrOK(n, "alt"); !ok {
					problems = append(problems, "an image without alt: "+attr(n, "src"))
				}
			case "svg":
				if attr(n, "role") == "img" && attr(n, "aria-label") == "" && !hasChild(n, "title") {
					problems = append(problems, "an svg image with no accessible name")
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inLabel)
		}
	}
	walk(doc, false)
	for _, c := range controls {
		if !wrapped[c] && !labelled[attr(c, "id")] && attr(c, "aria-label") == "" && attr(c, "aria-labelledby") == "" {
			problems = append(problems, "a form control without a label: <"+c.Data+" name="+attr(c, "name")+">")
		}
	}
	if !lang {
		problems = append(problems, "<html> without lang")
	}
	if !title {
		problems = append(problems, "no <title>")
	}
	if mains != 1 {
		problems = append(problems, "not exactly one <main>")
	}
	return problems
}

func attr(n *html.Node, name string) string { v, _ := attrOK(n, name); return v }

func attrOK(n *html.Node, name string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val, true
		}
	}
	return "", false
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		if n.Type == html.ElementNode && n.Data == "img" {
			b.WriteString(attr(n, "alt"))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

func hasChild(n *html.Node, tag string) bool {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode && c.Data == tag {
			return true
		}
	}
	return false
}

// The check itself finds what it looks for.
func TestAccessibilityCheckFindsProblems(t *testing.T) {
	bad := `<html><head></head><body><form><input name="q"><select name="s"></select>` +
		`<button></button><a href="/x"></a><img src="i.png"><svg role="img"></svg></form></body></html>`
	got := accessibilityProblems(bad)
	for _, want := range []string{"<input name=q>", "<select name=s>", "a button with no text", "a link with no text", "an image without alt",
		"an svg image with no accessible name", "<html> without lang", "no <title>", "not exactly one <main>"} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("not found: %s (found %q)", want, got)
		}
	}
	good := `<html lang="en"><head><title>t</title></head><body><main><form><label for="q">Q</label><input id="q" name="q">` +
		`<label>S <select name="s"></select></label><input type="hidden" name="csrf"><button>Go</button></form></main></body></html>`
	if got := accessibilityProblems(good); len(got) > 0 {
		t.Errorf("a correct page: %q", got)
	}
}
