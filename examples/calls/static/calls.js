/**
 * The calls page: buttons run Python routes with `sse.run`; `routes` are
 * the page's functions that Python runs with `endpoint.run`.
 */
import { openSSE } from "/sse/client.js";

const $ = (id) => document.getElementById(id);

/** Note each call Python makes to the page, with its answer. */
function logCall(name, args, answer) {
  const item = document.createElement("li");
  item.textContent = `${name}(${args.map((a) => JSON.stringify(a)).join(", ")}) → ${JSON.stringify(answer)}`;
  $("calls").append(item);
  return answer;
}

const sse = openSSE({
  url: "/sse",
  // The functions Python may run in this page.
  routes: {
    describe: () =>
      logCall("describe", [], {
        title: document.title,
        language: navigator.language,
        width: window.innerWidth,
        height: window.innerHeight,
      }),
    multiply: (a, b) => logCall("multiply", [a, b], a * b),
    read_note: () => logCall("read_note", [], $("note").value),
    // A Promise is fine too: Python waits for it.
    confirm: (text) =>
      new Promise((resolve) => setTimeout(() => resolve(logCall("confirm", [text], "yes, got it")), 100)),
  },
  onsession: () => {
    $("status").textContent = "connected";
    $("status").classList.remove("down");
  },
  onerror(error) {
    if (error instanceof Event) {
      $("status").textContent = "reconnecting…";
      $("status").classList.add("down");
    }
  },
});
window.sse = sse;

/** Run Python route `route` when `button` is clicked; show the result in `output`. */
function wire(button, output, route, args = () => []) {
  $(button).addEventListener("click", async () => {
    $(output).textContent = "…";
    try {
      $(output).textContent = JSON.stringify(await sse.run(route, args()));
    } catch (error) {
      $(output).textContent = `error: ${error.message}`;
    }
  });
}

wire("add", "add-result", "add", () => [2, 3]);
wire("time", "time-result", "server_time");
wire("reverse", "reverse-result", "reverse", () => [$("word").value]);
wire("call-me", "call-me-result", "call_me");
