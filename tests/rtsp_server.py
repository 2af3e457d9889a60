"""A real RTSP camera for tests: GStreamer's RTSP server looping an H.264 Annex-B clip.

Run with Debian's /usr/bin/python3 (GStreamer's bindings live there, not in the venv):

    /usr/bin/python3 tests/rtsp_server.py --clip clip.h264 --port 8554

Serves rtsp://127.0.0.1:PORT/cam at 25 fps; prints "ready URL" on stdout once the port is bound,
then serves until killed. Tests freeze it with SIGSTOP/SIGCONT and kill it to play a failing camera.

The clip must have no B-frames and one slice per frame: the pipeline only parses and packetises,
it never re-encodes, so what the clip holds is what the camera "sends".
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

LAUNCH = (
    "( multifilesrc location=\"{clip}\" loop=true "
    "! video/x-h264,stream-format=byte-stream,framerate=25/1 "
    "! h264parse name=parse ! video/x-h264,alignment=au "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def _pts_from_dts(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    # h264parse on a raw byte stream stamps DTS only; without PTS every RTP timestamp is 0 and
    # FFmpeg probes the stream for seconds. No B-frames in the clip, so PTS = DTS is exact.
    buf = info.get_buffer()
    if buf is not None and buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def _on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    parse = media.get_element().get_by_name("parse")
    parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", required=True, help="H.264 Annex-B file, no B-frames")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(clip=args.clip))
    # Shared: clients connected at the same time watch one pipeline, as they would one camera.
    factory.set_shared(True)
    factory.connect("media-configure", _on_media_configure)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot bind 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"ready rtsp://127.0.0.1:{args.port}/cam", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
