using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using OrleansPush.Gateway.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace OrleansPush.Gateway.Tests;

/// <summary>TLS from Kestrel's configuration, and a gateway that survives thousands of hostile frames. Runs alone with
/// the observability tests: the hostile-frames test reads the managed heap, which is the whole test process's, so a
/// gateway another test starts meanwhile would count as growth (CI saw +7.9 MiB that way with the test running beside
/// the others; alone it measures 0.05 to 1 MiB).</summary>
[Collection(ObservabilityCollection.Name)]
public sealed class SecurityHardeningTests
{
    [Fact]
    public async Task AGatewayWithAConfiguredCertificateServesWssAndHttps()
    {
        using var certificate = SelfSigned();
        var file = Path.Combine(Path.GetTempPath(), $"orleanspush-test-{Guid.NewGuid():N}.pfx");
        const string password = "test-password";
        await File.WriteAllBytesAsync(file, certificate.Export(X509ContentType.Pfx, password));
        try
        {
            var port = Ports.Free();
            await using var gateway = await SecureGateway.StartAsync(null, new Dictionary<string, string?>
            {
                ["Kestrel:Endpoints:Https:Url"] = $"https://127.0.0.1:{port}",
                ["Kestrel:Endpoints:Https:Certificate:Path"] = file,
                ["Kestrel:Endpoints:Https:Certificate:Password"] = password,
            }, url: null);
            Assert.Equal("https", gateway.BaseAddress.Scheme);

            bool Trusted(X509Certificate? presented) => presented is not null && presented.GetCertHashString() == certificate.GetCertHashString();
            using var socket = new ClientWebSocket();
            socket.Options.AddSubProtocol("orleanspush.v1.json");
            socket.Options.RemoteCertificateValidationCallback = (_, presented, _, _) => Trusted(presented);
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            await socket.ConnectAsync(new Uri($"wss://127.0.0.1:{port}/ws"), cts.Token);
            var topic = "tls-" + Guid.NewGuid().ToString("N");
            await socket.SendAsync(Encoding.UTF8.GetBytes($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\"}}"), WebSocketMessageType.Text, true, cts.Token);
            Assert.Contains("\"op\":\"ok\"", await ReceiveAsync(socket, cts.Token));

            using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, presented, _, _) => Trusted(presented) };
            using var https = new HttpClient(handler) { BaseAddress = new Uri($"https://127.0.0.1:{port}"), Timeout = WsClient.DefaultWait };
            using var published = await https.PostAsync("/api/topics/" + topic, new StringContent("{\"secure\":true}", Encoding.UTF8, "application/json"), cts.Token);
            Assert.Equal(HttpStatusCode.OK, published.StatusCode);
            Assert.Contains("{\"secure\":true}", await ReceiveAsync(socket, cts.Token));

            // An untrusting client refuses the self-signed certificate: the socket really is TLS.
            using var strict = new ClientWebSocket();
            await Assert.ThrowsAnyAsync<Exception>(() => strict.ConnectAsync(new Uri($"wss://127.0.0.1:{port}/ws"), cts.Token));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("ES256")]
    [InlineData("RS256")]
    public async Task APublicKeyFileVerifiesTokensSignedWithItsPrivateKey(string algorithm)
    {
        using AsymmetricAlgorithm key = algorithm == "ES256" ? ECDsa.Create(ECCurve.NamedCurves.nistP256) : RSA.Create(2048);
        var file = Path.Combine(Path.GetTempPath(), $"orleanspush-test-{Guid.NewGuid():N}.pem");
        await File.WriteAllTextAsync(file, key.ExportSubjectPublicKeyInfoPem());
        try
        {
            await using var gateway = await SecureGateway.StartAsync(null, new Dictionary<string, string?>
            {
                ["OrleansPush:Auth:Jwt:PublicKeyFile"] = file,
            });
            SigningCredentials Credentials(AsymmetricAlgorithm k) => k is ECDsa ec
                ? new SigningCredentials(new ECDsaSecurityKey(ec), SecurityAlgorithms.EcdsaSha256)
                : new SigningCredentials(new RsaSecurityKey((RSA)k), SecurityAlgorithms.RsaSha256);
            string Token(SigningCredentials credentials) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
            {
                Expires = DateTime.UtcNow.AddMinutes(5),
                Claims = new Dictionary<string, object> { ["sub"] = "pk-user", ["topics"] = new[] { "pk:*" } },
                SigningCredentials = credentials,
            });

            var (status, socket) = await gateway.TryConnectAsync("access_token=" + Token(Credentials(key)));
            Assert.Equal(HttpStatusCode.SwitchingProtocols, status);
            socket!.Dispose();

            using AsymmetricAlgorithm other = algorithm == "ES256" ? ECDsa.Create(ECCurve.NamedCurves.nistP256) : RSA.Create(2048);
            (status, socket) = await gateway.TryConnectAsync("access_token=" + Token(Credentials(other)));
            socket?.Dispose();
            Assert.Equal(HttpStatusCode.Unauthorized, status);

            // An HS256 token made with the public key as its secret (the classic algorithm confusion) is refused too.
            var confused = Token(new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(await File.ReadAllTextAsync(file))), SecurityAlgorithms.HmacSha256));
            (status, socket) = await gateway.TryConnectAsync("access_token=" + confused);
            socket?.Dispose();
            Assert.Equal(HttpStatusCode.Unauthorized, status);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("OrleansPush:Auth:Jwt:SigningKey", "too-short")]
    [InlineData("OrleansPush:Auth:Jwt:PublicKeyFile", "/nonexistent/issuer.pem")]
    [InlineData("OrleansPush:Limits:MessagesPerSecond", "-1")]
    [InlineData("OrleansPush:AllowedOrigins:0", "https://app.example.com/path")]
    public async Task ABadSecuritySettingStopsTheGatewayWithAMessageNamingTheKey(string key, string value)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => SecureGateway.StartAsync(null, new Dictionary<string, string?> { [key] = value }));
        Assert.Contains(key.Replace(":0", string.Empty, StringComparison.Ordinal), error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HandshakesPerSecondAndConnectionsPerIpAreCapped()
    {
        await using var gateway = await SecureGateway.StartAsync(null, new Dictionary<string, string?>
        {
            ["OrleansPush:Limits:HandshakesPerSecond"] = "3",
            ["OrleansPush:Limits:ConnectionsPerIp"] = "2",
        });
        // A burst well over the rate: some get through, the rest are refused with rate_limited (how many get through
        // depends on where the burst falls against the bucket's one-second refill).
        var answers = await Task.WhenAll(Enumerable.Range(0, 20).Select(async _ =>
        {
            using var negotiate = await gateway.Http.PostAsync("/hubs/push/negotiate?negotiateVersion=1", null);
            return (negotiate.StatusCode, Body: await negotiate.Content.ReadAsStringAsync());
        }));
        Assert.Contains(answers, a => a.StatusCode == HttpStatusCode.OK);
        Assert.Contains(answers, a => a.StatusCode == HttpStatusCode.TooManyRequests);
        Assert.All(answers.Where(a => a.StatusCode != HttpStatusCode.OK), a => Assert.Contains("rate_limited", a.Body, StringComparison.Ordinal));

        await Task.Delay(TimeSpan.FromSeconds(2.2));
        await using var first = await WsClient.ConnectAsync(gateway.WebSocketUri());
        await using var second = await WsClient.ConnectAsync(gateway.WebSocketUri());
        var (status, socket) = await gateway.TryConnectAsync();
        socket?.Dispose();
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        Assert.Equal("ok", (await first.RequestAsync("ping")).Op);
    }

    [Fact]
    public async Task ThousandsOfMalformedOversizedAndRandomFramesLeaveTheGatewayServingWithBoundedMemory()
    {
        await using var gateway = await SecureGateway.StartAsync(null, new Dictionary<string, string?>
        {
            // Limits off, so every frame reaches the parser.
            ["OrleansPush:Limits:MessagesPerSecond"] = "0",
            ["OrleansPush:Gateway:MaxMessageBytes"] = "4096",
            ["OrleansPush:Gateway:OutboundQueueBytes"] = "65536",
        });
        var random = new Random(20261130);
        var fragments = new[]
        {
            "{\"op\":\"sub\",\"id\":", "{\"op\":\"pub\",\"topic\":\"chat:x\",\"data\":", "{\"op\":\"refresh\",\"token\":", "\"since\":{\"epoch\":",
            "[[[[", "]]}}", "\"\\u0000\"", "1e999", "-0", "null", "true", "{\"op\":\"ping\",\"id\":1}", "\uD800", "\"topic\":\"user:x\"", ",", ":",
        };

        // A first storm warms every pool and cache the gateway keeps (Kestrel's memory pool, ArrayPool, limiter
        // partitions); what a second storm of the same size leaves behind once its connections are gone must be a
        // small part of what it sent (measured here: 0.05 to 1 MiB of 11.4 MiB), so a gateway that kept the frames, or
        // anything per frame, fails however many were sent.
        using var budget = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        const int total = 4000;
        var (warmSent, _) = await StormAsync(total);
        Assert.True(warmSent >= total / 2, $"only {warmSent} frames of the warm-up storm were sent within the time budget");
        await SettledAsync(open: 0);
        var before = Heap();
        var (sent, sentBytes) = await StormAsync(total);
        Assert.True(sent >= total / 2, $"only {sent} frames were sent within the time budget");

        await SettledAsync(open: 0);
        var growth = Heap() - before;
        Assert.True(growth < sentBytes / 5, $"the heap grew by {growth / 1024} KiB over {sent} hostile frames of {sentBytes / 1024} KiB in all");

        // Still serving: a well-behaved client subscribes and receives.
        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri());
        var topic = "after-fuzz-" + Guid.NewGuid().ToString("N");
        Assert.Equal("ok", (await client.SubscribeAsync(topic)).Op);
        using (var content = new StringContent("{\"ok\":1}", Encoding.UTF8, "application/json"))
        using (var answer = await gateway.Http.PostAsync("/api/topics/" + topic, content))
        {
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        }

        Assert.Equal("{\"ok\":1}", (await client.MessagesAsync(1))[0].RawData);

        // A storm's connections are gone (closed by the gateway or aborted by the client) before memory is read.
        async Task SettledAsync(int open)
        {
            var drain = gateway.Services.GetRequiredService<ConnectionDrain>();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (drain.OpenConnections > open && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }

            Assert.Equal(open, drain.OpenConnections);
        }

        async Task<(int Sent, long Bytes)> StormAsync(int count)
        {
            var sent = 0;
            long bytes = 0;
            ClientWebSocket? socket = null;
            try
            {
                while (sent < count && !budget.IsCancellationRequested)
                {
                    if (socket is not { State: WebSocketState.Open })
                    {
                        socket?.Dispose();
                        socket = new ClientWebSocket();
                        socket.Options.AddSubProtocol("orleanspush.v1.json");
                        await socket.ConnectAsync(gateway.WebSocketUri(), budget.Token);
                        _ = DrainAsync(socket, budget.Token);
                    }

                    var kind = random.Next(5);
                    byte[] frame = kind switch
                    {
                        0 => RandomBytes(random, random.Next(1, 300)),
                        1 => Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, random.Next(1, 12)).Select(_ => fragments[random.Next(fragments.Length)]))),
                        2 => Encoding.UTF8.GetBytes("{\"op\":\"sub\",\"id\":" + random.Next() + ",\"topic\":\"" + new string('a', random.Next(0, 400)) + "\"}"),
                        3 => RandomBytes(random, 4096 + random.Next(1, 20_000)),
                        _ => Encoding.UTF8.GetBytes("{\"op\":\"pub\",\"id\":1,\"topic\":\"chat:fuzz\",\"data\":" + new string('[', random.Next(1, 100)) + "}"),
                    };
                    var type = random.Next(10) == 0 ? WebSocketMessageType.Binary : WebSocketMessageType.Text;
                    try
                    {
                        await socket.SendAsync(frame, type, true, budget.Token);
                    }
                    catch (Exception ex) when (ex is WebSocketException or IOException || ex is OperationCanceledException && !budget.IsCancellationRequested)
                    {
                        // The gateway closed this one (1009 after an oversized frame, 1007 after invalid UTF-8): open another.
                        socket.Abort();
                    }

                    sent++;
                    bytes += frame.Length;
                }
            }
            finally
            {
                socket?.Abort();
                socket?.Dispose();
            }

            return (sent, bytes);
        }
    }

    private static long Heap()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private static async Task DrainAsync(ClientWebSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (socket.State == WebSocketState.Open)
            {
                var result = await socket.ReceiveAsync(buffer, cancellationToken);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private static async Task<string> ReceiveAsync(ClientWebSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[64 * 1024];
        var length = 0;
        ValueWebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer.AsMemory(length), cancellationToken);
            length += result.Count;
        }
        while (!result.EndOfMessage);

        return Encoding.UTF8.GetString(buffer, 0, length);
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pfx), null, X509KeyStorageFlags.Exportable);
    }
}
