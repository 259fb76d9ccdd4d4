using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet.Protocol;
using OrleansPush.Gateway.Transports.Mqtt;

namespace OrleansPush.Gateway.Tests;

/// <summary>Issue 16: the positions kept for persistent MQTT sessions that went away last
/// <c>OrleansPush:Mqtt:SessionResumeWindow</c> and are then forgotten, whether or not anyone connects again.</summary>
public sealed class MqttSessionBoundTests
{
    [Fact]
    public async Task PositionsOfGoneSessionsAreForgottenOnceTheResumeWindowHasPassed()
    {
        var port = Ports.Free();
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = port.ToString(CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Mqtt:SessionResumeWindow"] = "00:00:02",
        });
        var bridge = gateway.Services.GetRequiredService<MqttBridge>();
        const int sessions = 5;
        for (var i = 0; i < sessions; i++)
        {
            var topic = GatewayFixture.NewTopic("mqgone");
            await using var client = await MqttTestClient.ConnectTcpAsync(port, "gone-" + Guid.NewGuid().ToString("N"), cleanSession: false);
            await client.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
            await gateway.PublishAsync(topic, "{\"n\":1}");
            Assert.Equal("{\"n\":1}", (await client.NextAsync()).Payload);
        }

        // Each session's positions are kept once its connection is gone...
        var deadline = DateTime.UtcNow + WsClient.DefaultWait;
        while (bridge.ResumableSessions < sessions)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{bridge.ResumableSessions} of {sessions} gone sessions kept");
            await Task.Delay(50);
        }

        // ...and forgotten after the window, with nobody connecting meanwhile.
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (bridge.ResumableSessions > 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"{bridge.ResumableSessions} gone sessions still kept 18 s after their resume window");
            await Task.Delay(100);
        }
    }
}
