// The page's script, as ES modules (no build step): the glue between htmx
// and the server's streams, the pieces that grow a reply, the composer, and
// reading the page (scrolling, timestamps, what screen readers hear).
// Modules run once the document is parsed, before DOMContentLoaded, which is
// when htmx starts: every listener below is in place before it does.
import "./stream.js";
import "./pieces.js";
import "./composer.js";
import "./page.js";
import "./copy.js";
import "./edit.js";
