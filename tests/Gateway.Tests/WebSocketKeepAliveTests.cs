using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Transports.WebSockets;

namespace OrleansPush.Gateway.Tests;

/// <summary>The gateway-wide keep-alive of raw WebSockets (one sweep, not a timer per socket), seen on the wire by a
/// client that reads every frame itself: idle sockets get pongs, busy ones are not disturbed, and a pong never lands
/// inside a message frame.</summary>
public sealed class WebSocketKeepAliveTests
{
    [Fact]
    public async Task AnIdleSocketIsPingedAndLeavesTheSweepWhenItCloses()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:KeepAliveInterval"] = "00:00:00.200",
        });
        var keepAlive = gateway.Services.GetRequiredService<WebSocketKeepAlive>();

        using (var client = await RawWebSocket.ConnectAsync(gateway.BaseAddress))
        {
            Assert.Equal(1, keepAlive.Count);
            for (var pongs = 0; pongs < 3;)
            {
                var frame = await client.ReadFrameAsync(TimeSpan.FromSeconds(10));
                Assert.Equal(0xA, frame.Opcode);
                Assert.Empty(frame.Payload);
                pongs++;
            }
        }

        await WaitUntilAsync(() => keepAlive.Count == 0);
    }

    [Fact]
    public async Task PongsNeverSplitAMessageFrame()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            // the shortest sweep (50 ms), so pongs and messages race all the time
            ["OrleansPush:Gateway:KeepAliveInterval"] = "00:00:00.050",
        });
        var topic = GatewayFixture.NewTopic("ka");
        using var client = await RawWebSocket.ConnectAsync(gateway.BaseAddress);
        await client.SendTextAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\"}}");
        var pongs = 0;

        // Subscribed once answered: a message published before that would be nobody's to deliver.
        while (true)
        {
            var frame = await client.ReadFrameAsync(TimeSpan.FromSeconds(30));
            if (frame.Opcode == 0xA)
            {
                pongs++;
                continue;
            }

            using var answer = JsonDocument.Parse(frame.Payload);
            Assert.Equal("ok", answer.RootElement.GetProperty("op").GetString());
            break;
        }

        // Messages spaced around the interval, some in bursts: a socket both busy and idle by turns.
        var random = new Random(7);
        var padding = new string('x', 3000);
        var publishing = Task.Run(async () =>
        {
            for (var i = 1; i <= 150; i++)
            {
                await gateway.PublishAsync(topic, $"{{\"i\":{i},\"pad\":\"{padding}\"}}");
                if (random.Next(4) != 0)
                {
                    await Task.Delay(random.Next(30, 80));
                }
            }
        });

        var seqs = new List<long>();
        while (seqs.Count < 150)
        {
            var frame = await client.ReadFrameAsync(TimeSpan.FromSeconds(30));
            if (frame.Opcode == 0xA)
            {
                Assert.Empty(frame.Payload);
                pongs++;
                continue;
            }

            Assert.Equal(0x1, frame.Opcode);
            using var json = JsonDocument.Parse(frame.Payload);
            if (json.RootElement.GetProperty("op").GetString() == "msg")
            {
                seqs.Add(json.RootElement.GetProperty("seq").GetInt64());
                Assert.Equal(seqs.Count, json.RootElement.GetProperty("data").GetProperty("i").GetInt32());
            }
        }

        await publishing;
        Assert.Equal(Enumerable.Range(1, 150).Select(i => (long)i), seqs);
        Assert.True(pongs > 0, "the idle gaps between bursts are longer than the interval, so some pongs went out");
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!condition())
        {
            await Task.Delay(20, timeout.Token);
        }
    }

    /// <summary>A WebSocket client over a plain socket that hands back every frame, control frames included (a
    /// <c>ClientWebSocket</c> swallows pongs).</summary>
    private sealed class RawWebSocket : IDisposable
    {
        private readonly TcpClient _tcp;
        private readonly NetworkStream _stream;

        private RawWebSocket(TcpClient tcp)
        {
            _tcp = tcp;
            _stream = tcp.GetStream();
        }

        public static async Task<RawWebSocket> ConnectAsync(Uri baseAddress)
        {
            var tcp = new TcpClient();
            await tcp.ConnectAsync(baseAddress.Host, baseAddress.Port);
            var client = new RawWebSocket(tcp);
            var key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(16));
            var request = $"GET /ws HTTP/1.1\r\nHost: {baseAddress.Authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
                $"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: orleanspush.v1.json\r\n\r\n";
            await client._stream.WriteAsync(Encoding.ASCII.GetBytes(request));

            // The response head, byte by byte up to the blank line (the first frame may follow at once).
            var head = new StringBuilder();
            var one = new byte[1];
            while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                await client.ReadExactlyAsync(one, TimeSpan.FromSeconds(10));
                head.Append((char)one[0]);
            }

            Assert.StartsWith("HTTP/1.1 101", head.ToString());
#pragma warning disable CA5350 // RFC 6455 defines the accept key with SHA-1; nothing here relies on it for security
            var accept = Convert.ToBase64String(SHA1.HashData(Encoding.ASCII.GetBytes(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")));
#pragma warning restore CA5350
            Assert.Contains("Sec-WebSocket-Accept: " + accept, head.ToString());
            return client;
        }

        public async Task SendTextAsync(string text)
        {
            var payload = Encoding.UTF8.GetBytes(text);
            Assert.True(payload.Length < 126);
            var mask = RandomNumberGenerator.GetBytes(4);
            var frame = new byte[6 + payload.Length];
            frame[0] = 0x81;
            frame[1] = (byte)(0x80 | payload.Length);
            mask.CopyTo(frame, 2);
            for (var i = 0; i < payload.Length; i++)
            {
                frame[6 + i] = (byte)(payload[i] ^ mask[i % 4]);
            }

            await _stream.WriteAsync(frame);
        }

        /// <summary>The next whole frame (the server sends unfragmented, unmasked frames).</summary>
        public async Task<(int Opcode, byte[] Payload)> ReadFrameAsync(TimeSpan timeout)
        {
            var header = new byte[2];
            await ReadExactlyAsync(header, timeout);
            Assert.True((header[0] & 0x80) != 0, "every frame the gateway sends is final");
            Assert.True((header[1] & 0x80) == 0, "server frames are not masked");
            long length = header[1] & 0x7F;
            if (length == 126)
            {
                var extended = new byte[2];
                await ReadExactlyAsync(extended, timeout);
                length = (extended[0] << 8) | extended[1];
            }
            else if (length == 127)
            {
                var extended = new byte[8];
                await ReadExactlyAsync(extended, timeout);
                length = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(extended);
            }

            Assert.InRange(length, 0, 1 << 20);
            var payload = new byte[length];
            await ReadExactlyAsync(payload, timeout);
            return (header[0] & 0x0F, payload);
        }

        private async Task ReadExactlyAsync(byte[] buffer, TimeSpan timeout)
        {
            using var cancel = new CancellationTokenSource(timeout);
            await _stream.ReadExactlyAsync(buffer, cancel.Token);
        }

        public void Dispose() => _tcp.Dispose();
    }
}
