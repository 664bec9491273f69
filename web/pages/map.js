// lastmile's map, shared by the tracking page and the dispatcher's map: the
// road graph the server holds, drawn on canvas tiles (no tile server), and
// a small client for the JSON API with the page's token.
"use strict";

const lastmile = (() => {
  // Stroke per road class (the server's class numbers, fastest first):
  // [colour, width in pixels at zoom 16]. Casing is drawn from zoom 13 in.
  const STYLE = [
    ["#e8912b", 5], ["#e8912b", 3], ["#f2b33d", 5], ["#f2b33d", 3],
    ["#f7d774", 4.5], ["#f7d774", 3], ["#fbe9a6", 4], ["#fbe9a6", 2.5],
    ["#ffffff", 3.5], ["#ffffff", 2.5], ["#ffffff", 3], ["#ffffff", 3],
    ["#ffffff", 2.5], ["#ffffff", 1.5],
  ];

  function api(token) {
    const headers = { Authorization: "Bearer " + token };
    async function call(method, path, body) {
      const init = { method, headers: { ...headers } };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const r = await fetch(path, init);
      const text = await r.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
      if (!r.ok) {
        const e = new Error((json && json.message) || r.statusText);
        e.status = r.status;
        e.code = json && json.code;
        throw e;
      }
      return json;
    }
    return {
      get: (path) => call("GET", path),
      post: (path, body) => call("POST", path, body),
      // EventSource cannot send headers: the token goes in the query.
      feed: (path) => new EventSource(path + (path.includes("?") ? "&" : "?") +
        "token=" + encodeURIComponent(token)),
    };
  }

  // A Leaflet layer drawing the roads of each tile from /api/v1/roads/z/x/y.
  function roads(client) {
    const Layer = L.GridLayer.extend({
      createTile(coords, done) {
        const tile = document.createElement("canvas");
        const size = this.getTileSize();
        const ratio = window.devicePixelRatio || 1;
        tile.width = size.x * ratio;
        tile.height = size.y * ratio;
        client.get(`/api/v1/roads/${coords.z}/${coords.x}/${coords.y}`)
          .then((answer) => {
            draw(tile.getContext("2d"), answer.roads, coords.z, ratio * size.x / 256);
            done(null, tile);
          })
          .catch((e) => done(e, tile));
        return tile;
      },
    });
    return new Layer({ className: "lm-roads", updateWhenZooming: false, keepBuffer: 1 });
  }

  function draw(ctx, roads, zoom, scale) {
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const k = scale / 4; // the server's quarter pixels
    const widthAt = (w) => Math.max(0.6, w * Math.pow(2, (zoom - 16) * 0.6)) * scale;
    // Casing first, then the fill, slowest classes below the fast ones.
    const order = roads.slice().sort((a, b) => b[0] - a[0]);
    for (const pass of [0, 1]) {
      for (const r of order) {
        const [colour, width] = STYLE[r[0]] || STYLE[STYLE.length - 1];
        const w = widthAt(width);
        ctx.strokeStyle = pass === 0 ? "#c9c2b6" : colour;
        ctx.lineWidth = pass === 0 ? w + 1.2 * scale : w;
        if (pass === 0 && zoom < 13) continue;
        ctx.beginPath();
        ctx.moveTo(r[1] * k, r[2] * k);
        for (let i = 3; i + 1 < r.length; i += 2) ctx.lineTo(r[i] * k, r[i + 1] * k);
        ctx.stroke();
      }
    }
  }

  // A map in `element` over the road layer, fitted to the server's map.
  async function map(element, client, options) {
    const m = L.map(element, {
      preferCanvas: true,
      zoomControl: true,
      attributionControl: true,
      minZoom: 3,
      maxZoom: 19,
      ...(options || {}),
    });
    m.attributionControl.setPrefix(false);
    m.attributionControl.addAttribution("Roads © OpenStreetMap contributors · Leaflet");
    roads(client).addTo(m);
    const info = await client.get("/api/v1/map");
    const [a, b, c, d] = info.bbox;
    if (!options || !options.center) m.fitBounds([[a, b], [c, d]]);
    return m;
  }

  const time = (t) => t == null ? "" :
    new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

  return { api, map, time };
})();
