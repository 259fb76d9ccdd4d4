using System.Net;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

/// <summary>Defect 11 of issue 10: what a publisher is told when its publish got no answer.</summary>
public sealed class PublishAnswerTests
{
    /// <summary>An attempt that timed out may still be sequenced: a keyed publish whose last attempt got no answer is
    /// told it may have been published and to retry with the same key, never "not published".</summary>
    [Fact]
    public async Task AKeyedPublishWhoseLastAttemptTimedOutIsToldItMayHaveBeenPublished()
    {
        await using var redis = new OrleansPush.Cluster.Tests.RedisServer();
        await redis.StartAsync();
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = redis.Address,
            ["OrleansPush:Gateway:PublishAttemptTimeout"] = "00:00:01",
            ["OrleansPush:Gateway:PublishTimeout"] = "00:00:03",
        });
        var topic = GatewayFixture.NewTopic("pay");
        Assert.Equal(1, (await gateway.PublishAsync(topic, "{\"warm\":true}")).Seq);

        // The history store stops answering (paused, as in a long stall): the append may or may not be done later.
        Signal(redis.Pid, "-STOP");
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/topics/" + topic) { Content = new StringContent("{\"amount\":10}") };
            request.Headers.Add("Idempotency-Key", "pay-" + Guid.NewGuid().ToString("N"));
            using var response = await gateway.Http.SendAsync(request);
            var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("unavailable", body.GetProperty("error").GetString());
            var message = body.GetProperty("message").GetString()!;
            Assert.Contains("may have been published", message, StringComparison.Ordinal);
            Assert.Contains("same Idempotency-Key", message, StringComparison.Ordinal);
        }
        finally
        {
            Signal(redis.Pid, "-CONT");
        }
    }

    /// <summary>Sends a signal to a process this test started, by its id.</summary>
    private static void Signal(int pid, string signal)
    {
        using var kill = System.Diagnostics.Process.Start("kill", [signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit(5000);
        Assert.Equal(0, kill.ExitCode);
    }
}
