using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Protocol;
using Orleans.Core.Internal;

namespace OrleansPush.Gateway.Tests;

/// <summary>
/// Defect 12 of issue 10: an MQTT wildcard subscriber learns of a new topic from its announcement, or, when that was
/// lost, from the namespace's list at the next renewal; either way it gets the topic's first messages.
/// </summary>
public sealed class WildcardRenewalTests
{
    // Renewals every 4 s: rare enough that one seldom lands between the directory's deactivation and the announcement.
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(12);

    [Fact]
    public async Task ANewTopicWhoseAnnouncementWasLostIsSubscribedFromItsFirstMessageAtTheNextRenewal()
    {
        var mqttPort = Ports.Free();
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = mqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Topics:Namespaces:sensors:Wildcards"] = "true",
            ["OrleansPush:Routing:Lease"] = Lease.ToString(),
        });
        var site = "sensors:" + Guid.NewGuid().ToString("N")[..8];
        await using var client = await MqttTestClient.ConnectTcpAsync(mqttPort);
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, await client.SubscribeAsync($"{site}/+/temp", MqttQualityOfServiceLevel.AtLeastOnce));

        // Lose the announcement: a namespace directory that reactivates has forgotten the gateways watching it, so the
        // topic that activates right after announces itself to nobody.
        var cluster = gateway.Services.GetRequiredService<IClusterClient>();
        var directory = cluster.GetGrain<INamespaceGrain>("sensors");
        Assert.True(await DeactivateAsync(cluster, directory), "the namespace directory did not deactivate (the gateway's renewals kept reactivating it)");
        var topic = $"{site}/attic/temp";
        for (var t = 1; t <= 3; t++)
        {
            await gateway.PublishAsync(topic, $"{{\"t\":{t}}}");
        }

        // The next renewal (a third of the lease) lists the topic: all three messages arrive, in order (each wait is
        // bounded by the client's 30 s).
        var received = new List<(string Topic, string Payload)>();
        for (var i = 0; i < 3; i++)
        {
            received.Add(await client.NextAsync());
        }

        Assert.Equal(new[] { 1, 2, 3 }.Select(t => (topic, $"{{\"t\":{t}}}")), received);
        await gateway.PublishAsync(topic, "{\"t\":4}");
        Assert.Equal((topic, "{\"t\":4}"), await client.NextAsync());
        await client.AssertQuietAsync(TimeSpan.FromMilliseconds(500));
    }

    /// <summary>Deactivates <paramref name="grain"/> and waits until it is seen gone (the gateway's own renewals may
    /// reactivate it at once; then it tries again).</summary>
    private static async Task<bool> DeactivateAsync(IClusterClient cluster, IAddressable grain)
    {
        var management = cluster.GetGrain<IManagementGrain>(0);
        var id = grain.GetGrainId();
        for (var attempt = 0; attempt < 5; attempt++)
        {
            await grain.AsReference<IGrainManagementExtension>().DeactivateOnIdle();
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(2);
            while (DateTime.UtcNow < until)
            {
                if (!(await management.GetActiveGrains(id.Type)).Contains(id))
                {
                    return true;
                }

                await Task.Delay(10);
            }
        }

        return false;
    }
}
