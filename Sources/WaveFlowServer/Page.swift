/// `GET /`: one self-contained page (no external assets). Drop a recording
/// (WAV, FLAC, Ogg…: copy synthesis through `POST /v1/copy`) or a `.npy` mel
/// (`POST /v1/vocode`); the page plays the result beside the original and
/// shows both log-mel spectrograms (PNG from `POST /v1/spectrogram`, one
/// colour scale: the original's).
enum Page {
    static let html = #"""
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><title>waveflow</title>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>
      body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 64em; padding: 0 1em; color: #222; }
      h1 { font-size: 1.4em; margin: 0 0 .2em; } .sub { color: #666; margin: 0 0 1em; }
      #drop { border: 2px dashed #888; border-radius: 10px; padding: 1.6em; text-align: center; background: #fafafa; cursor: pointer; }
      #drop.over { background: #eef4ff; border-color: #3b6fd8; }
      .row { display: flex; gap: 1.2em; flex-wrap: wrap; margin-top: 1.2em; }
      .col { flex: 1 1 28em; min-width: 0; }
      .col h2 { font-size: 1.05em; margin: 0 0 .4em; }
      img { width: 100%; height: 180px; image-rendering: pixelated; border: 1px solid #ddd; display: block; margin-top: .5em; background: #000; }
      img:not([src]) { visibility: hidden; }
      audio { width: 100%; }
      label { margin-right: 1em; } input[type=number] { width: 5em; }
      #status { margin-top: .8em; color: #444; min-height: 1.4em; } .err { color: #b00020; }
      code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; }
    </style></head>
    <body>
    <h1>waveflow</h1>
    <p class="sub" id="model">a flow vocoder: log-mel spectrogram &rarr; speech</p>
    <div id="drop">Drop a recording (WAV, FLAC, Ogg&hellip;) for copy synthesis, or a <code>.npy</code> mel [n_mels, frames] &mdash; or click to choose a file
      <input type="file" id="file" hidden></div>
    <p><label>sigma <input type="number" id="sigma" value="0.9" step="0.1" min="0"></label>
       <label>seed <input type="number" id="seed" value="0" min="0" step="1"></label>
       <label>denoise <input type="number" id="denoise" value="0" step="0.01" min="0"></label></p>
    <div id="status"></div>
    <div class="row">
      <div class="col"><h2>Original <span id="oname"></span></h2><audio id="oa" controls></audio><img id="oi" alt="original log-mel spectrogram"></div>
      <div class="col"><h2 id="rtitle">waveflow</h2><audio id="ra" controls></audio><img id="ri" alt="synthesised log-mel spectrogram"></div>
    </div>
    <script>
    const $ = id => document.getElementById(id);
    fetch('/v1/model').then(r => r.json()).then(m => {
      $('model').textContent = `model: ${m.family} family, ${(m.parameters / 1e6).toFixed(2)} M parameters, ${m.sample_rate} Hz, ${m.n_mels} mel bands, ${m.precision}`;
    }).catch(() => {});
    const drop = $('drop');
    drop.onclick = () => $('file').click();
    $('file').onchange = e => e.target.files[0] && run(e.target.files[0]);
    drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
    drop.ondragleave = () => drop.classList.remove('over');
    drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over'); e.dataTransfer.files[0] && run(e.dataTransfer.files[0]); };
    function say(text, bad) { $('status').textContent = text; $('status').className = bad ? 'err' : ''; }
    async function post(url, body, type) {
      const r = await fetch(url, { method: 'POST', body, headers: { 'Content-Type': type } });
      if (!r.ok) throw new Error(`${r.status}: ${(await r.text()).trim()}`);
      return r;
    }
    async function run(file) {
      const npy = file.name.toLowerCase().endsWith('.npy');
      const q = `sigma=${encodeURIComponent($('sigma').value)}&seed=${encodeURIComponent($('seed').value)}&denoise=${encodeURIComponent($('denoise').value)}`;
      $('oname').textContent = '(' + file.name + ')';
      $('rtitle').textContent = npy ? 'waveflow (vocoded mel)' : 'waveflow (copy synthesis)';
      for (const id of ['oa', 'ra']) $(id).removeAttribute('src');
      for (const id of ['oi', 'ri']) $(id).removeAttribute('src');
      say('synthesising ' + file.name + ' …');
      try {
        const t0 = performance.now();
        const spec = await post('/v1/spectrogram', file, npy ? 'application/x-npy' : 'application/octet-stream');
        const top = spec.headers.get('X-Mel-Top');
        $('oi').src = URL.createObjectURL(await spec.blob());
        if (!npy) $('oa').src = URL.createObjectURL(file);
        const r = await post(npy ? '/v1/vocode?' + q : '/v1/copy?' + q, file, npy ? 'application/x-npy' : 'application/octet-stream');
        const wav = await r.blob();
        const seconds = (performance.now() - t0) / 1000;
        $('ra').src = URL.createObjectURL(wav);
        const rs = await post('/v1/spectrogram?top=' + encodeURIComponent(top), wav, 'audio/wav');
        $('ri').src = URL.createObjectURL(await rs.blob());
        const audio = r.headers.get('X-Audio-Samples') / r.headers.get('X-Sample-Rate');
        say(`${audio.toFixed(2)} s of audio in ${seconds.toFixed(2)} s; log-mel spectrograms below (one colour scale, the original's)` + (npy ? ' (a mel has no original recording to play)' : ''));
      } catch (e) { say(e.message, true); }
    }
    </script>
    </body></html>
    """#
}
