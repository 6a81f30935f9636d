/**
 * The chat page: one stream per room (the room is the stream's channel),
 * `say` and `set_name` run on the server with `sse.run`.
 * `?room=python&name=Ada` in the URL picks the room and the name.
 */
import { openSSE } from "/sse/client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/** What the page is doing; `window.chat` for a look from the console. */
const chat = (window.chat = {
  room: params.get("room") || "lobby",
  name: params.get("name") || `guest-${Math.random().toString(36).slice(2, 6)}`,
  rooms: [],
  sse: null,
});

function setStatus(text, down = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("down", down);
}

function remember() {
  const url = new URL(location.href);
  url.searchParams.set("room", chat.room);
  url.searchParams.set("name", chat.name);
  history.replaceState(null, "", url);
}

/** Add one message to the list; `old` for the ones from before we came. */
function show(message, old) {
  const item = document.createElement("li");
  item.className = old ? "message history" : "message";
  item.dataset.name = message.name;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = message.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  const at = document.createElement("time");
  at.textContent = new Date(message.at).toLocaleTimeString();
  item.append(name, text, at);
  const list = $("messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

function drawRooms() {
  const list = $("rooms");
  list.replaceChildren();
  for (const { room, members } of chat.rooms) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.room = room;
    button.className = room === chat.room ? "current" : "";
    button.textContent = `#${room}`;
    const count = document.createElement("span");
    count.className = "members";
    count.textContent = String(members);
    button.append(count);
    button.onclick = () => room !== chat.room && join(room);
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
}

async function loadRooms() {
  try {
    chat.rooms = await chat.sse.run("rooms");
    drawRooms();
  } catch {
    // the stream is down: the next session loads them again
  }
}

/** Leave the current room (its stream) and open one for `room`. */
function join(room) {
  chat.sse?.terminate();
  chat.room = room;
  remember();
  $("room-title").textContent = `#${room}`;
  $("messages").replaceChildren();
  document.body.dataset.ready = "";
  setStatus("connecting…");
  drawRooms();
  const sse = openSSE({
    url: "/sse",
    channels: [room],
    events: {
      // A newcomer: the room's last messages, at once.
      history({ room: which, messages }) {
        if (which !== room) return;
        $("messages").replaceChildren();
        for (const message of messages) show(message, true);
        if (messages.length) {
          const divider = document.createElement("li");
          divider.className = "divider";
          divider.textContent = "earlier messages";
          $("messages").append(divider);
        }
      },
      // Live messages, and after a reconnection the ones we missed.
      [room]: (message) => show(message, false),
    },
    async onsession() {
      // A new session (after a reconnection too): it needs our name.
      try {
        chat.name = await sse.run("set_name", [chat.name]);
        $("name").value = chat.name;
        remember();
        setStatus(`connected as ${chat.name}`);
        document.body.dataset.ready = "1";
      } catch (error) {
        setStatus(`set_name failed: ${error.message}`, true);
      }
      loadRooms();
    },
    onreset() {
      // The server no longer has everything since our last message (it
      // restarted, or the room's history is shorter than our absence).
      const divider = document.createElement("li");
      divider.className = "divider";
      divider.textContent = "some messages may be missing here";
      $("messages").append(divider);
    },
    onerror(error) {
      if (error instanceof Event) setStatus("reconnecting…", true);
    },
    onshutdown: () => setStatus("the server stopped; reconnecting…", true),
  });
  chat.sse = sse;
}

$("say-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  try {
    await chat.sse.run("say", [chat.room, text]);
    input.value = "";
  } catch (error) {
    setStatus(`not sent: ${error.message}`, true);
  }
});

$("name-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    chat.name = await chat.sse.run("set_name", [$("name").value]);
    remember();
    setStatus(`connected as ${chat.name}`);
  } catch (error) {
    setStatus(`rename failed: ${error.message}`, true);
  }
});

$("name").value = chat.name;
setInterval(() => chat.sse && loadRooms(), 5000);
join(chat.room);
