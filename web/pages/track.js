// The customer's tracking page: /t/<tracking token>. Shows the stop's
// status, time window and ETA with the stops before it, the van on the map
// only while this stop is next (the server reveals it only then), the
// outcome with its proof of delivery or the reason it failed, and takes one
// rating after delivery. Refreshed by the stop's own event feed, and every
// few seconds while the van is shown.
"use strict";

(() => {
  const token = decodeURIComponent(location.pathname.replace(/^\/t\//, "").split("/")[0]);
  const client = lastmile.api(token);
  const $ = (id) => document.getElementById(id);
  let map = null, van = null, stopMarker = null, timer = null, stars = 0, last = null;

  const HEADLINE = {
    pending: "On its way",
    next: "You're next",
    arrived: "The driver has arrived",
    completed: "Delivered",
    failed: "We could not deliver",
  };

  function fail(message) {
    document.body.classList.add("broken");
    $("status").textContent = message;
    for (const id of ["eta", "window", "before"]) $(id).textContent = "";
    for (const id of ["outcome", "rate", "rated", "map"]) $(id).hidden = true;
    if (timer) clearInterval(timer);
  }

  async function refresh() {
    let s;
    try {
      s = await client.get("/api/v1/tracking");
    } catch (e) {
      if (e.status === 401) fail("This tracking link has expired or is not valid.");
      else if (e.status === 403) fail("This link is not a delivery tracking link.");
      else if (e.status === 404) fail("This delivery is no longer tracked.");
      else $("status").dataset.stale = "1";
      return;
    }
    last = s;
    show(s);
  }

  function show(s) {
    if (!document.body.dataset.status) performance.mark("lastmile-status");
    document.body.dataset.status = s.status;
    $("status").textContent = HEADLINE[s.status] || s.status;
    $("ref").textContent = s.customer_ref ? "Order " + s.customer_ref : "";
    const open = s.status === "pending" || s.status === "next";
    if (open && s.eta_window) {
      $("eta").textContent = "Arriving between " + lastmile.time(s.eta_window[0]) + " and " +
        lastmile.time(s.eta_window[1]) + (s.late ? " (running late)" : "");
    } else if (open && s.eta != null) {
      $("eta").textContent = "Arriving around " + lastmile.time(s.eta) + (s.late ? " (running late)" : "");
    } else if (open && s.eta_state === "unreachable") {
      $("eta").textContent = "We are working out how to reach you.";
    } else {
      $("eta").textContent = open ? "Arrival time not known yet" : "";
    }
    $("window").textContent = s.window ?
      "Your time window: " + lastmile.time(s.window[0]) + " – " + lastmile.time(s.window[1]) : "";
    $("before").textContent = s.status === "pending" ?
      (s.stops_before === 1 ? "1 stop before yours" : s.stops_before + " stops before yours") :
      s.status === "next" ? "No stops before yours" : "";
    showOutcome(s);
    showMap(s);
  }

  function showOutcome(s) {
    const out = $("outcome");
    out.replaceChildren();
    const line = (text, cls) => {
      const p = document.createElement("p");
      p.textContent = text;
      if (cls) p.className = cls;
      out.appendChild(p);
    };
    if (s.outcome && s.outcome.completed) {
      const c = s.outcome.completed;
      line("Delivered at " + lastmile.time(s.closed), "strong");
      if (c.note) line("Driver's note: " + c.note);
      if (c.signature_ref) line("Signed for (signature " + c.signature_ref + ")");
      for (const p of c.photo_refs || []) line("Photo: " + p, "proof");
      out.hidden = false;
    } else if (s.outcome && s.outcome.failed != null) {
      line("Attempted at " + lastmile.time(s.closed), "strong");
      line("Reason: " + s.outcome.failed);
      out.hidden = false;
    } else {
      out.hidden = true;
    }
    const delivered = s.status === "completed";
    $("rate").hidden = !delivered || s.rating != null;
    $("rated").hidden = s.rating == null;
    if (s.rating) {
      $("rated").textContent = "Thank you for rating this delivery " +
        "★".repeat(s.rating.stars) + "☆".repeat(5 - s.rating.stars) + ".";
    }
  }

  function showMap(s) {
    const here = s.position;
    const vp = s.vehicle_position;
    if (!vp && van) {
      van.remove();
      van = null;
    }
    document.body.dataset.van = van ? "shown" : "hidden";
    const wanted = here && (vp || s.status !== "completed");
    $("map").hidden = !wanted;
    if (!wanted) return;
    if (!map) {
      lastmile.map($("map"), client, { center: here, zoom: 15 }).then((m) => {
        map = m;
        stopMarker = L.circleMarker(here, { radius: 9, color: "#1b5e20", fillColor: "#43a047", fillOpacity: 1, weight: 3 })
          .addTo(m).bindTooltip("Your address");
        showMap(last);
      });
      return;
    }
    if (vp) {
      const at = [vp[0], vp[1]];
      if (!van) {
        van = L.circleMarker(at, { radius: 9, color: "#0d47a1", fillColor: "#2196f3", fillOpacity: 1, weight: 3 })
          .addTo(map).bindTooltip("Your driver");
        map.fitBounds(L.latLngBounds([at, here]).pad(0.3), { maxZoom: 16 });
      } else {
        van.setLatLng(at);
      }
    }
    document.body.dataset.van = van ? "shown" : "hidden";
  }

  function ratingForm() {
    for (let i = 1; i <= 5; i++) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "★";
      b.setAttribute("role", "radio");
      b.setAttribute("aria-label", i + (i === 1 ? " star" : " stars"));
      b.dataset.stars = i;
      b.addEventListener("click", () => {
        stars = i;
        for (const x of $("stars").children) x.classList.toggle("on", +x.dataset.stars <= i);
        $("send").disabled = false;
      });
      $("stars").appendChild(b);
    }
    $("send").addEventListener("click", async () => {
      $("send").disabled = true;
      try {
        await client.post("/api/v1/tracking/rating", { stars, comment: $("comment").value });
        $("rate-error").hidden = true;
      } catch (e) {
        $("rate-error").textContent = e.message;
        $("rate-error").hidden = false;
        $("send").disabled = false;
      }
      refresh();
    });
  }

  // For tests and embedding pages: where the van is drawn (null: hidden).
  window.lastmileTrack = { get van() { return van ? van.getLatLng() : null; } };

  ratingForm();
  refresh().then(() => {
    if (document.body.classList.contains("broken")) return;
    // Every event of this stop (ETA changes, arrival, outcome) refreshes
    // the page; the van moves between events, so poll while it is shown.
    const feed = client.feed("/api/v1/events");
    let pending = null;
    feed.onmessage = feed.onerror = null;
    const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 100); };
    for (const kind of ["eta_changed", "late", "back_on_time", "arrived", "departed", "completed", "failed", "stalled", "stop_unreachable", "rated", "rescheduled"]) {
      feed.addEventListener(kind, soon);
    }
    timer = setInterval(() => { if (van || (last && last.status === "next")) refresh(); }, 5000);
    // "Stops before yours" changes without an event of this stop.
    setInterval(() => { if (last && (last.status === "pending")) refresh(); }, 10000);
  });
})();
