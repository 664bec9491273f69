// The dispatcher's live map: /dispatch (a dispatcher or reader token, from
// `?token=` once, then kept for the tab). Every vehicle of the fleet on the
// map coloured by state, from /api/v1/fleet/live (only what changed, once a
// second); a count by state; a vehicle's stops and ETAs and its planned
// route on click; the event feed with filters by kind.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STATES = [
    ["on_time", "On time", "#2e7d32"],
    ["late", "Late", "#d32f2f"],
    ["off_route", "Off route", "#ef6c00"],
    ["stalled", "Stalled", "#8e24aa"],
    ["offline", "Offline", "#757575"],
    ["idle", "Idle", "#1e88e5"],
  ];
  const COLOUR = Object.fromEntries(STATES.map(([k, , c]) => [k, c]));
  const MILESTONES = ["out_for_delivery", "next_stop", "arriving", "delivered", "failed_attempt",
    "rescheduled"];
  const ZONES = ["zone_entered", "zone_left", "zone_dwell"];
  const KINDS = ["at_risk", "risk_cleared", "late", "back_on_time", "off_route", "back_on_route", "arrived", "departed",
    "completed", "failed", "stalled", "speeding", "harsh_braking", "offline", "online",
    "gps_outlier", "stop_unreachable", "rated", "forbidden_zone", "outside_area", "zone_speeding", "off_hours_movement",
    "service_due",
    ...ZONES, "eta_changed", ...MILESTONES];
  // Milestones repeat for customers what the others say for dispatchers;
  // zone entries and leavings are many, their rules' breaches few.
  const QUIET = new Set(["eta_changed", "gps_outlier", ...ZONES, ...MILESTONES]);
  const MAX_EVENTS = 200;

  const vehicles = new Map(); // name -> {marker, state}
  const counts = Object.fromEntries(STATES.map(([k]) => [k, 0]));
  let client, map, selected = null, routeLayer = null, events = null, zoneLayer = null;
  // For tests and embedding pages.
  window.lastmileDispatch = { vehicles, counts, get map() { return map; },
    get zones() { return zoneLayer ? zoneLayer.getLayers().length : 0; } };
  // Zones by kind: the area vans may work in, where they may not go, the rest.
  const ZONE_STYLE = {
    allowed: { color: "#2e7d32", weight: 2, dashArray: "8 6", fill: false },
    forbidden: { color: "#c62828", weight: 2, fillColor: "#c62828", fillOpacity: 0.12 },
    plain: { color: "#6a1b9a", weight: 2, fillColor: "#6a1b9a", fillOpacity: 0.08 },
  };

  function token() {
    const url = new URL(location.href);
    const t = url.searchParams.get("token");
    if (t) {
      sessionStorage.setItem("lastmile-token", t);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search);
    }
    return sessionStorage.getItem("lastmile-token");
  }

  function login(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login").onsubmit = (e) => {
      e.preventDefault();
      sessionStorage.setItem("lastmile-token", $("token").value.trim());
      start();
    };
  }

  async function start() {
    const t = token();
    if (!t) return login();
    client = lastmile.api(t);
    try {
      await client.get("/api/v1/vehicles?near=0,0&k=1");
    } catch (e) {
      sessionStorage.removeItem("lastmile-token");
      return login(e.status === 401 ? "That token is not valid." :
        e.status === 403 ? "This token may not see the fleet (a dispatcher or reader token is needed)." :
        e.message);
    }
    $("login").hidden = true;
    $("app").hidden = false;
    map = await lastmile.map($("map"), client);
    showZones();
    setInterval(showZones, 60000);
    countsList();
    kindFilters();
    follow();
    openEvents();
  }

  // The fleet's zones (GeoJSON: polygons, and points with a radius_m),
  // under the vehicles, named on hover.
  async function showZones() {
    let doc;
    try {
      doc = await client.get("/api/v1/zones");
    } catch (e) {
      return;
    }
    if (zoneLayer) zoneLayer.remove();
    const style = (f) => ZONE_STYLE[f.properties.kind] || ZONE_STYLE.plain;
    zoneLayer = L.geoJSON(doc, {
      style,
      pointToLayer: (f, at) => L.circle(at, { radius: f.properties.radius_m, ...style(f) }),
      onEachFeature: (f, layer) => {
        const p = f.properties;
        const rules = [p.kind && p.kind !== "plain" ? p.kind : "",
          p.speed_limit_kmh ? p.speed_limit_kmh + " km/h" : "",
          p.dwell_s ? "dwell " + Math.round(p.dwell_s / 60) + " min" : ""].filter(Boolean);
        layer.bindTooltip((p.name || p.id) + (rules.length ? " (" + rules.join(", ") + ")" : ""));
      },
    }).addTo(map);
    zoneLayer.bringToBack();
    document.body.dataset.zones = zoneLayer.getLayers().length;
  }

  function countsList() {
    for (const [k, label, colour] of STATES) {
      const li = document.createElement("li");
      li.dataset.state = k;
      li.innerHTML = `<span class="dot"></span><span class="label"></span> <b class="n">0</b>`;
      li.querySelector(".dot").style.background = colour;
      li.querySelector(".label").textContent = label;
      $("counts").appendChild(li);
    }
  }

  function showCounts() {
    let total = 0;
    for (const li of $("counts").children) {
      const n = counts[li.dataset.state];
      li.querySelector(".n").textContent = n;
      total += n;
    }
    $("total").textContent = "(" + total + ")";
  }

  function style(state, chosen) {
    return { radius: chosen ? 8 : 5, weight: chosen ? 3 : 1, color: chosen ? "#000" : "#fff",
      fillColor: COLOUR[state] || "#000", fillOpacity: 0.95 };
  }

  // The fleet feed: the first message has every vehicle, then what changed.
  function follow() {
    const feed = client.feed("/api/v1/fleet/live");
    feed.addEventListener("vehicles", (m) => {
      const u = JSON.parse(m.data);
      if (u.full) {
        for (const [name, v] of vehicles) { v.marker.remove(); vehicles.delete(name); }
        for (const k in counts) counts[k] = 0;
      }
      for (const [name, lat, lon, state] of u.vehicles) {
        let v = vehicles.get(name);
        if (!v) {
          const marker = L.circleMarker([lat, lon], style(state, name === selected)).addTo(map);
          marker.on("click", () => select(name));
          v = { marker, state };
          vehicles.set(name, v);
          counts[state]++;
          continue;
        }
        v.marker.setLatLng([lat, lon]);
        if (v.state !== state) {
          counts[v.state]--;
          counts[state]++;
          v.state = state;
          v.marker.setStyle(style(state, name === selected));
          if (name === selected) showVehicle();
        }
      }
      for (const name of u.gone) {
        const v = vehicles.get(name);
        if (v) { v.marker.remove(); counts[v.state]--; vehicles.delete(name); }
      }
      showCounts();
      document.body.dataset.vehicles = vehicles.size;
    });
  }

  function select(name) {
    const before = selected && vehicles.get(selected);
    if (before) before.marker.setStyle(style(before.state, false));
    selected = name;
    const v = vehicles.get(name);
    if (v) { v.marker.setStyle(style(v.state, true)); v.marker.bringToFront(); }
    showVehicle();
  }

  async function showVehicle() {
    if (!selected) return;
    const name = selected;
    let v;
    try {
      v = await client.get("/api/v1/vehicles/" + encodeURIComponent(name));
    } catch (e) {
      return;
    }
    if (name !== selected) return;
    $("vehicle").hidden = false;
    $("v-name").textContent = name;
    const state = (vehicles.get(name) || {}).state || "";
    $("v-state").textContent = [(STATES.find(([k]) => k === state) || [, state])[1],
      v.speed_mps != null ? Math.round(v.speed_mps * 3.6) + " km/h" : "",
      "last ping " + lastmile.time(v.time),
      v.zones.length ? "in " + v.zones.map((z) => z.zone).join(", ") : "",
      v.service.due.length ? "service due (" + v.service.due.join(", ").replace(/_/g, " ") + ")" : "",
      Math.round(v.lifetime_odometer_m / 1000) + " km"].filter(Boolean).join(" · ");
    const list = $("v-stops");
    list.replaceChildren();
    const line = v.position ? [v.position] : [];
    for (const s of v.stops) {
      const li = document.createElement("li");
      li.className = "stop " + s.status + (s.late ? " late" : s.at_risk ? " at-risk" : "");
      const window = s.eta_window ?
        " (" + lastmile.time(s.eta_window[0]) + "–" + lastmile.time(s.eta_window[1]) + ")" : "";
      const eta = s.status === "pending" || s.status === "next" ?
        (s.eta != null ? "ETA " + lastmile.time(s.eta) + window : "ETA unknown") : s.status;
      li.textContent = s.stop + " — " + eta +
        (s.late ? " (late)" : s.at_risk ? " (at risk)" : "") +
        (s.stars ? " " + "★".repeat(s.stars) + "☆".repeat(5 - s.stars) : "");
      if (s.stars && s.stars <= 2) li.classList.add("bad-rating");
      list.appendChild(li);
      if ((s.status === "pending" || s.status === "next") && s.position) line.push(s.position);
    }
    if (routeLayer) routeLayer.remove();
    routeLayer = L.layerGroup().addTo(map);
    L.polyline(line, { color: "#0d47a1", weight: 3, dashArray: "6 6", interactive: false }).addTo(routeLayer);
    v.stops.forEach((s) => {
      if (!s.position || !(s.status === "pending" || s.status === "next")) return;
      L.circleMarker(s.position, { radius: 6, color: "#0d47a1", fillColor: "#fff", fillOpacity: 1, weight: 2 })
        .bindTooltip(s.stop + (s.eta != null ? " · " + lastmile.time(s.eta) : ""), { permanent: line.length < 12 })
        .addTo(routeLayer);
    });
    document.body.dataset.selected = name;
  }
  setInterval(() => { if (selected) showVehicle(); }, 5000);

  function kindFilters() {
    for (const k of KINDS) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = k;
      box.checked = !QUIET.has(k);
      box.addEventListener("change", openEvents);
      label.append(box, " " + k.replace(/_/g, " "));
      $("kinds").appendChild(label);
    }
  }

  function openEvents() {
    if (events) events.close();
    const kinds = [...$("kinds").querySelectorAll("input:checked")].map((b) => b.value);
    if (!kinds.length) return;
    events = client.feed("/api/v1/events?kinds=" + kinds.join(","));
    for (const k of kinds) events.addEventListener(k, (m) => addEvent(JSON.parse(m.data)));
  }

  function addEvent(e) {
    const li = document.createElement("li");
    li.className = "event " + e.kind;
    const what = e.kind === "rated" ? "rated " + "★".repeat(e.value) + "☆".repeat(5 - e.value) :
      e.kind.replace(/_/g, " ");
    const about = e.stop || e.zone;
    li.textContent = lastmile.time(e.time) + " " + e.vehicle + " " + what + (about ? " · " + about : "");
    li.addEventListener("click", () => select(e.vehicle));
    $("events").prepend(li);
    while ($("events").children.length > MAX_EVENTS) $("events").lastChild.remove();
    if (e.vehicle === selected) showVehicle();
  }

  start();
})();
